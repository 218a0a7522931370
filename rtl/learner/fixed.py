"""Fixed-point building blocks of the contract (docs/fixed-point.md), as Amaranth expressions."""
from __future__ import annotations

from amaranth import Mux, Value


def saturate(value: Value, bits: int) -> Value:
    """Clamp a signed value to Q(bits): the device never wraps."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = value.as_signed() if not value.shape().signed else value
    return Mux(v > hi, hi, Mux(v < lo, lo, v)).as_signed()[:bits].as_signed()


def rshift_round(value: Value, n: int) -> Value:
    """Arithmetic shift right by n with round half up: floor((v + 2^(n-1)) / 2^n)."""
    if n == 0:
        return value
    return (value + (1 << (n - 1))) >> n
