"""The device's noise source: a right-shifting Galois LFSR, modelled bit-exactly.

`step` is the register as the RTL builds it. `stream_bits` gives the same output bits for a whole
training step at once: each output bit is a parity of the seed under a fixed mask (the LFSR is linear
over GF(2)), so a table of masks replaces a sequential loop. The hardware may emit several stream bits
per clock (leap-forward lanes); the stream itself, and so the contract, does not depend on that.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .config import ZERO_SEED_SUBSTITUTE


def guard_seed(seed: int, width: int) -> int:
    """The register's initial state for a seed: masked to the width, zero replaced by a fixed constant."""
    mask = (1 << width) - 1
    s = seed & mask
    return s if s else (ZERO_SEED_SUBSTITUTE & mask) or 1


def step(state: int, taps: int) -> tuple[int, int]:
    """One clock: returns (output bit, next state). The output is the bit shifted out of position 0."""
    out = state & 1
    return out, (state >> 1) ^ (taps if out else 0)


def stream_reference(seed: int, n: int, width: int, taps: int) -> np.ndarray:
    """The first n output bits, by clocking the register (slow; the definition the fast path is tested against)."""
    s = guard_seed(seed, width)
    out = np.empty(n, np.uint8)
    for i in range(n):
        out[i], s = step(s, taps)
    return out


@lru_cache(maxsize=32)
def _masks(n: int, width: int, taps: int) -> np.ndarray:
    """masks[i] such that output bit i = parity(masks[i] & initial_state).

    Output i is bit 0 of A^i s, where A is the one-clock transition; its row vector r_i obeys
    r_{i+1} = A^T r_i, and for this register A^T r = (r << 1 within the width) | parity(taps & r).
    """
    mask = (1 << width) - 1
    r = 1
    out = np.empty(n, np.uint64)
    for i in range(n):
        out[i] = r
        r = ((r << 1) & mask) | (bin(taps & r).count("1") & 1)
    return out


def output_masks(n: int, width: int, taps: int) -> np.ndarray:
    """masks[i] with stream bit i = parity(masks[i] & initial state); the leap-forward gateware uses these."""
    return _masks(1 << max(10, (n - 1).bit_length()), width, taps)[:n]


def stream_bits(seed: int, n: int, width: int, taps: int) -> np.ndarray:
    """The first n output bits after seeding with `seed` (uint8 array of 0/1)."""
    if n == 0:
        return np.zeros(0, np.uint8)
    m = output_masks(n, width, taps)  # tables cached by powers of two
    s = np.uint64(guard_seed(seed, width))
    return (np.bitwise_count(m & s) & 1).astype(np.uint8)
