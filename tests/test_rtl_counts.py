"""rtl.learner.counts.SpikeCountTable against the literal T-step LIF loop, in Amaranth's simulator."""
import numpy as np
import pytest

from rfsnn.rtl.learner.counts import SpikeCountTable
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.contract.neuron import lif_update


def literal_counts(cfg, cur):
    """Spikes over T steps of neurons driven by the constant currents `cur`, by the element-wise rule."""
    u, total = np.zeros_like(cur), np.zeros_like(cur)
    for _ in range(cfg.t_steps):
        u, s = lif_update(u, cur, cfg)
        total += s
    return total


@pytest.mark.parametrize("cfg,lanes", [
    (DeviceConfig(), 3),  # T = 16, theta = 4096: the ROM is 4096 x 4
    (DeviceConfig(layers=(2, 16, 1), t_steps=8, max_batch=64, max_directions=4, loss_bits=32, step_bits=16), 1),
    (DeviceConfig(threshold=1.5, leak_shift=1, t_steps=32), 2),  # theta not a power of two
    (DeviceConfig(t_steps=1), 2),  # no ROM: only a current >= theta fires
])
def test_counts_equal_the_time_loop(cfg, lanes, simulate):
    rng = np.random.default_rng(cfg.t_steps)
    lo, hi = cfg.u_range
    th = cfg.threshold_q
    edges = [lo, -1, 0, 1, 2, th - 2, th - 1, th, th + 1, hi]
    # every current the ROM holds (exhaustive), the rails, and random currents on both sides
    cur = np.concatenate([edges, np.arange(-1, th + 2), rng.integers(-th, 2 * th, 100), rng.integers(lo, hi + 1, 50)])
    cur = np.resize(cur, -(-cur.size // lanes) * lanes).reshape(-1, lanes).astype(np.int64)
    expected = literal_counts(cfg, cur)
    dut = SpikeCountTable(cfg, lanes, range(len(cur)))
    got = {}

    async def drive(ctx):
        for k, row in enumerate(cur):
            ctx.set(dut.valid, 1)
            ctx.set(dut.tag, k)
            for q in range(lanes):
                ctx.set(dut.cur[q], int(row[q]))
            await ctx.tick()
            if k % 7 == 3:  # gaps in the input must not make outputs
                ctx.set(dut.valid, 0)
                await ctx.tick()
        ctx.set(dut.valid, 0)

    async def collect(ctx):
        for _ in range(3 * len(cur) + 10):
            await ctx.tick()
            if ctx.get(dut.out_valid):
                tag = ctx.get(dut.out_tag)
                assert tag not in got, f"chunk {tag} came out twice"
                got[tag] = [ctx.get(dut.count[q]) for q in range(lanes)]

    simulate(dut, drive, collect)
    assert sorted(got) == list(range(len(cur))), "every input must come out once"
    bad = [(int(cur[k, q]), got[k][q], int(expected[k, q])) for k in range(len(cur)) for q in range(lanes)
           if got[k][q] != expected[k, q]]
    assert not bad, f"{len(bad)} wrong counts, first (current, got, expected): {bad[0]}"
    reachable = set(literal_counts(cfg, np.arange(-1, th + 2)))
    assert set(expected.ravel()) == reachable and len(reachable) > 1  # every count a neuron can make occurs
