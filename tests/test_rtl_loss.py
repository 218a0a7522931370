"""rtl.loss.LossAccumulator against the contract's saturating squared-error sum."""
import numpy as np
import pytest

from rfsnn.rtl.learner.loss import LossAccumulator
from rfsnn.sim.contract.config import DeviceConfig


@pytest.mark.parametrize("loss_bits", [48, 36])
def test_running_loss_equals_saturated_sum(loss_bits, simulate):
    cfg = DeviceConfig(loss_bits=loss_bits)
    rng = np.random.default_rng(loss_bits)
    lo, hi = cfg.y_range
    n = 3000
    y = rng.integers(lo, hi + 1, size=n)
    t = rng.integers(lo, hi + 1, size=n)
    y[::7], t[::7] = hi, lo  # the largest error there is
    valid = rng.random(n) < 0.8
    expect = np.minimum(np.cumsum(np.where(valid, (y - t) ** 2, 0)), cfg.loss_max)
    dut = LossAccumulator(cfg)
    got = []

    async def bench(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for k in range(n):
            ctx.set(dut.pairs.valid, int(valid[k]))
            ctx.set(dut.pairs.payload, {"y": int(y[k]), "target": int(t[k])})
            await ctx.tick()
            got.append(ctx.get(dut.loss))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        got.append(ctx.get(dut.loss))

    simulate(dut, bench)
    assert np.array_equal(np.array(got[:-1], dtype=object), expect.astype(object))
    assert got[-1] == 0
    if loss_bits == 36:
        assert expect[-1] == cfg.loss_max  # saturation reached and held
