"""rtl.loss.LossAccumulator against the contract's saturating squared-error sum."""
import numpy as np
import pytest

from rfsnn.rtl.learner.loss import LossAccumulator
from rfsnn.sim.contract.config import DeviceConfig


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("loss_bits,lanes", [(48, 1), (36, 1), (48, 8), (36, 3)])
def test_running_loss_equals_saturated_sum(loss_bits, lanes, registered, simulate):
    cfg = DeviceConfig(loss_bits=loss_bits)
    rng = np.random.default_rng(loss_bits + lanes)
    lo, hi = cfg.y_range
    n = 3000 // lanes
    y = rng.integers(lo, hi + 1, size=(n, lanes))
    t = rng.integers(lo, hi + 1, size=(n, lanes))
    y[::7], t[::7] = hi, lo  # the largest error there is
    valid = rng.random((n, lanes)) < 0.8
    expect = np.minimum(np.cumsum(np.where(valid, (y - t) ** 2, 0).sum(axis=1)), cfg.loss_max)
    dut = LossAccumulator(cfg, lanes, registered_errors=registered)
    latency = 3 if registered else 2  # clocks from a pair to its square in the loss
    got, busy = [], []

    async def bench(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for k in range(n + latency):
            if k < n:
                ctx.set(dut.valid, int(sum(int(v) << r for r, v in enumerate(valid[k]))))
                for r in range(lanes):
                    ctx.set(dut.y[r], int(y[k, r]))
                    ctx.set(dut.target[r], int(t[k, r]))
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            if k >= latency - 1:
                got.append(ctx.get(dut.loss))
            busy.append(ctx.get(dut.busy))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        got.append(ctx.get(dut.loss))

    simulate(dut, bench)
    assert np.array_equal(np.array(got[:n], dtype=object), expect.astype(object))
    assert got[-1] == 0
    # busy while a valid pair has not reached the loss: after the tick of clock k, pairs k - latency + 2 .. k
    in_flight = [valid[max(0, k - latency + 2):k + 1].any() for k in range(n + latency)]
    assert busy == in_flight
    if loss_bits == 36:
        assert expect[-1] == cfg.loss_max  # saturation reached and held
