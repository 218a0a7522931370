"""The noise source: the fast table-driven stream equals the clocked register; periods; zero seed."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rfsnn.sim.contract import lfsr
from rfsnn.sim.contract.config import MAXIMAL_TAPS, ZERO_SEED_SUBSTITUTE


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 700), width=st.sampled_from(sorted(MAXIMAL_TAPS)))
def test_fast_stream_equals_clocked_register(seed, n, width):
    taps = MAXIMAL_TAPS[width]
    assert np.array_equal(lfsr.stream_bits(seed, n, width, taps), lfsr.stream_reference(seed, n, width, taps))


@pytest.mark.parametrize("width", [8, 16])
def test_period_is_maximal(width):
    """Every non-zero state is visited once before the register repeats."""
    taps = MAXIMAL_TAPS[width]
    s0 = s = 1
    seen = set()
    for _ in range((1 << width) - 1):
        seen.add(s)
        _, s = lfsr.step(s, taps)
    assert s == s0 and len(seen) == (1 << width) - 1 and 0 not in seen


def _polymulmod(a, b, poly, deg):
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a >> deg & 1:
            a ^= poly
    return r


def _polypow(e, poly, deg):
    result, base = 1, 2  # the polynomial "x"
    while e:
        if e & 1:
            result = _polymulmod(result, base, poly, deg)
        base = _polymulmod(base, base, poly, deg)
        e >>= 1
    return result


@pytest.mark.parametrize("width", sorted(MAXIMAL_TAPS))
def test_feedback_polynomial_is_primitive(width):
    """x has order 2^n - 1 modulo the feedback polynomial, so the period is maximal (too long to walk at 32 bits).

    Bit i of the tap mask is the x^(i+1) term of the polynomial; x^0 is always present.
    """
    taps = MAXIMAL_TAPS[width]
    poly = 1
    for i in range(width):
        if taps >> i & 1:
            poly |= 1 << (i + 1)
    order = (1 << width) - 1
    assert _polypow(order, poly, width) == 1
    factors, n, f = set(), order, 2
    while f * f <= n:
        while n % f == 0:
            factors.add(f)
            n //= f
        f += 1
    if n > 1:
        factors.add(n)
    for p in factors:
        assert _polypow(order // p, poly, width) != 1, f"order divides (2^{width}-1)/{p}"


def test_zero_seed_is_guarded():
    for width, taps in MAXIMAL_TAPS.items():
        assert lfsr.guard_seed(0, width) != 0
        assert lfsr.guard_seed(1 << width, width) == lfsr.guard_seed(0, width)  # masked to the width first
        bits = lfsr.stream_bits(0, 200, width, taps)
        assert bits.any()
        assert np.array_equal(bits, lfsr.stream_bits(ZERO_SEED_SUBSTITUTE, 200, width, taps))


def test_replay_from_the_same_seed():
    a = lfsr.stream_bits(123456789, 5000, 32, MAXIMAL_TAPS[32])
    b = lfsr.stream_bits(123456789, 5000, 32, MAXIMAL_TAPS[32])
    c = lfsr.stream_bits(123456790, 5000, 32, MAXIMAL_TAPS[32])
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(a.mean() - 0.5) < 0.03  # balanced bits
