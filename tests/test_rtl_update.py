"""rtl.update (step unit, update lanes) against the golden step_value and apply_update."""
import numpy as np
import pytest

from rfsnn.rtl.learner.update import StepUnit, UpdateDelta, UpdateLanes, delta_bits
from rfsnn.sim.contract.config import DeviceConfig, StepParams
from rfsnn.sim.golden import apply_update, step_value


# The default widths, and the narrower ones of the iCEBreaker's device (boards/targets.py).
@pytest.mark.parametrize("cfg", [DeviceConfig(), DeviceConfig(loss_bits=32, step_bits=16)], ids=["default", "narrow"])
def test_step_unit_equals_golden(cfg, simulate):
    rng = np.random.default_rng(1)
    lim = 1 << cfg.loss_bits
    vectors = []
    for _ in range(400):
        scale = min(int(rng.choice([1 << 8, 1 << 20, 1 << 34, lim - 1])), lim - 1)
        d = int(rng.integers(-scale, scale + 1))
        vectors.append((d, int(rng.integers(0, 1 << cfg.gain_bits)), int(rng.integers(1, 64)),
                        int(rng.choice([0, 1, 77, rng.integers(0, cfg.step_range[1] + 1), cfg.step_range[1]]))))
    vectors += [(lim - 1, (1 << cfg.gain_bits) - 1, 1, cfg.step_range[1]), (-(lim - 1), (1 << cfg.gain_bits) - 1, 1, cfg.step_range[1]),
                (5, 0, 3, 100), (-(lim - 1), (1 << cfg.gain_bits) - 1, 63, 100),
                (-3, 1, 1, 100), (3, 1, 1, 100), (-1, 1, 1, 100), (1, 1, 1, 100)]  # ties round half up
    dut = StepUnit(cfg)
    got = []

    async def bench(ctx):
        for d, mant, shift, clip in vectors:
            ctx.set(dut.loss_diff, d)
            ctx.set(dut.gain_mant, mant)
            ctx.set(dut.gain_shift, shift)
            ctx.set(dut.clip, clip)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            clocks = 1
            while ctx.get(dut.busy):
                await ctx.tick()
                clocks += 1
            assert clocks <= cfg.gain_bits + shift + 2
            got.append(ctx.get(dut.step))

    simulate(dut, bench)
    for v, g in zip(vectors, got):
        sp = StepParams(seed=1, gain_mant=v[1], gain_shift=v[2], clip=v[3])
        assert g == step_value(v[0], sp), v
    assert any(abs(g) == v[3] > 0 for v, g in zip(vectors, got)), "the clip should bind sometimes"


@pytest.mark.parametrize("lanes", [1, 4])
def test_update_lanes_equal_golden(lanes, responses):
    cfg = DeviceConfig()
    rng = np.random.default_rng(lanes)
    n = 800 * lanes
    wlo, whi = cfg.w_range
    dlim = 1 << (delta_bits(cfg) - 1)
    w = rng.integers(wlo, whi + 1, size=n)
    w[rng.random(n) < 0.2] = rng.choice([wlo, whi], size=1)
    delta = rng.integers(-(1 << 12), 1 << 12, size=n)
    big = rng.random(n) < 0.2
    delta[big] = rng.integers(-dlim, dlim, size=big.sum())
    rnd = rng.integers(0, 1 << cfg.step_frac, size=n)
    expect = apply_update(w, delta, rnd, cfg)
    dut = UpdateLanes(cfg, lanes)
    vectors = [slice(i, i + lanes) for i in range(0, n, lanes)]

    def drive(ctx, sl):
        for i, k in enumerate(range(sl.start, sl.stop)):
            ctx.set(dut.w[i], int(w[k]))
            ctx.set(dut.delta[i], int(delta[k]))
            ctx.set(dut.rnd[i], int(rnd[k]))

    got = responses(dut, vectors, drive, lambda ctx: [ctx.get(dut.w_new[i]) for i in range(lanes)])
    assert np.array_equal(np.concatenate(got), expect)
    assert (expect == wlo).any() and (expect == whi).any()  # both rails reached


@pytest.mark.parametrize("directions,step_bits,multipliers", [
    (4, 16, None), (4, 16, False), (32, 24, None), (32, 24, True), (1, 24, None), (5, 16, None), (9, 16, False)])
def test_update_delta_sums_the_counted_terms(directions, step_bits, multipliers, simulate):
    """delta = sum_k [counts_k] step_k a_k b_k, one set of inputs per clock, `latency` clocks later; in both
    forms (shift-multiplexers with the +1s in carry-ins; multipliers). A direction that does not count
    adds 0 whatever its lanes hold, also bit patterns no factor has."""
    cfg = DeviceConfig(max_directions=directions, step_bits=step_bits, loss_bits=32)
    dut = UpdateDelta(cfg, multipliers)
    assert dut.multipliers == (directions <= 4 if multipliers is None else multipliers)
    rng = np.random.default_rng(directions * 100 + step_bits)
    n = 300
    hi = cfg.step_range[1]
    steps = rng.integers(-hi, hi + 1, size=(n, directions))
    steps[rng.random(steps.shape) < 0.3] = rng.choice([-hi, hi, 0])  # the rails of the clip
    a = rng.integers(-2, 3, size=(n, directions))
    b = rng.integers(-2, 3, size=(n, directions))
    a[:n // 3] = rng.choice([-1, 1], size=(n // 3, directions))  # rademacher
    b[:n // 3] = rng.choice([-1, 1], size=(n // 3, directions))
    counts = rng.random((n, directions)) < 0.8
    counts[n - 20:] = True
    steps[n - 20:] = rng.choice([-hi, hi], size=(20, directions))  # the extremes of the sum
    a[n - 20:], b[n - 20:] = rng.choice([-2, 2], size=(2, 20, directions))
    steps[n - 2:], a[n - 2:], b[n - 2:] = [[hi], [-hi]], 2, 2  # +-K * 4 * hi: the widest sums
    junk_a, junk_b = rng.integers(-4, 4, size=(2, n, directions))  # what an uncounted lane may hold
    a_in, b_in = np.where(counts, a, junk_a), np.where(counts, b, junk_b)
    expect = (counts * steps * a * b).sum(axis=1)
    got = []

    async def bench(ctx):
        for t in range(n + dut.latency - 1):
            if t < n:
                for k in range(directions):
                    ctx.set(dut.steps[k], int(steps[t, k]))
                    ctx.set(dut.a[k], int(a_in[t, k]))
                    ctx.set(dut.b[k], int(b_in[t, k]))
                ctx.set(dut.counts, sum(int(c) << k for k, c in enumerate(counts[t])))
            await ctx.tick()
            if t + 1 >= dut.latency:
                got.append(ctx.get(dut.delta))

    simulate(dut, bench)
    assert got == expect.tolist()
    assert expect[-2] == -expect[-1] == directions * 4 * hi
