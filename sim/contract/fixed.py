"""Fixed-point numbers as the device holds them, and its 64-bit command words.

Every real value crosses into the device through :func:`quantize`, which refuses (rather than
saturates or wraps) anything it cannot represent: a clipped target silently changes the task, and a
NaN becomes an arbitrary integer. Refusals name the first offending sample so the culprit can be found
in the data.
"""
from __future__ import annotations

import math

import numpy as np

MASK64 = (1 << 64) - 1  # a command's data word: 64-bit two's complement
#: Largest word size for which every integer of the range is exact in float64.
MAX_TOTAL_BITS = 53


def signed64(word: int) -> int:
    """A 64-bit command or response word as the signed integer it encodes."""
    return word - (1 << 64) if word >> 63 else word


def fits_signed(word: int, bits: int) -> bool:
    """Whether a 64-bit word holds a signed integer of `bits` bits."""
    return -(1 << (bits - 1)) <= signed64(word) < (1 << (bits - 1))


def format_number(v: float) -> str:
    """Shortest exact text for a float, integers without '.0' (for error messages)."""
    v = float(v)
    if math.isfinite(v) and v == math.floor(v) and abs(v) < 2.0**53:
        return str(int(v))
    return repr(v)


def _check_format(frac_bits: int, total_bits: int | None = None) -> None:
    if not isinstance(frac_bits, (int, np.integer)) or frac_bits < 0:
        raise ValueError(f"frac_bits must be an integer >= 0, got {frac_bits!r}")
    if total_bits is not None and (
        not isinstance(total_bits, (int, np.integer)) or not 2 <= total_bits <= MAX_TOTAL_BITS
    ):
        raise ValueError(
            f"total_bits must be an integer in [2, {MAX_TOTAL_BITS}], got {total_bits!r}"
        )


def representable_range(frac_bits: int, total_bits: int) -> tuple[float, float]:
    """Smallest and largest real value of a signed (total_bits, frac_bits) word."""
    _check_format(frac_bits, total_bits)
    scale = 2.0**frac_bits
    return -(2.0 ** (total_bits - 1)) / scale, (2.0 ** (total_bits - 1) - 1.0) / scale


def _where(what: str, flat: int, shape: tuple[int, ...]) -> str:
    if len(shape) == 0:
        return what
    idx = np.unravel_index(flat, shape)
    if len(shape) == 1:
        return f"{what} sample {idx[0]}"
    if len(shape) == 2:
        return f"{what} sample {idx[0]}, column {idx[1]}"
    return f"{what} at index {tuple(int(i) for i in idx)}"


def quantize(values, frac_bits: int, total_bits: int, what: str = "value") -> np.ndarray:
    """Real values to signed fixed-point integers, round(values * 2**frac_bits), as int64.

    Rounding is numpy's round-to-nearest with ties to even (np.round); the
    scaling by a power of two is exact, so ties are genuine ties.  Refuses
    with ValueError any NaN or infinity and any value whose rounded integer
    lies outside [-2**(total_bits-1), 2**(total_bits-1) - 1], naming the first
    offending element in C order (sample = row, then column for 2-D arrays).
    """
    _check_format(frac_bits, total_bits)
    v = np.asarray(values, dtype=np.float64)
    scaled = np.round(v * 2.0**frac_bits)
    lo_int = -(2.0 ** (total_bits - 1))
    hi_int = 2.0 ** (total_bits - 1) - 1.0
    finite = np.isfinite(v)
    bad = ~finite | (scaled < lo_int) | (scaled > hi_int)
    if bad.any():
        flat = int(np.argmax(bad.ravel()))
        value = v.ravel()[flat]
        where = _where(what, flat, v.shape)
        if not finite.ravel()[flat]:
            raise ValueError(f"{where}: value {format_number(value)} is not a finite number")
        lo, hi = representable_range(frac_bits, total_bits)
        raise ValueError(
            f"{where}: value {format_number(value)} is outside the representable range "
            f"[{format_number(lo)}, {format_number(hi)}] "
            f"({total_bits}-bit, {frac_bits} fractional bits)"
        )
    return scaled.astype(np.int64)


def dequantize(ints, frac_bits: int) -> np.ndarray:
    """Fixed-point integers back to float64 (exact for words up to 53 bits)."""
    _check_format(frac_bits)
    a = np.asarray(ints)
    if not np.issubdtype(a.dtype, np.integer):
        f = a.astype(np.float64)
        if not np.all(np.isfinite(f) & (f == np.round(f))):
            raise ValueError("dequantize expects integers (fixed-point words)")
        a = f
    return a.astype(np.float64) / 2.0**frac_bits
