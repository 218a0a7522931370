"""rtl.layer_tick.LayerTick: T time steps of a constant-current layer equal the golden neuron steps."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from rfsnn.rtl.layer_tick import LayerTick
from rfsnn.sim.config import DeviceConfig
from rfsnn.sim.golden import lif_update


@pytest.mark.parametrize("n,neuron_lanes,sample_lanes", [(10, 4, 2), (8, 8, 1), (5, 1, 3)])
def test_ticks_equal_golden(n, neuron_lanes, sample_lanes):
    cfg = DeviceConfig(t_steps=16)
    rng = np.random.default_rng(n * 10 + neuron_lanes)
    th = cfg.threshold_q
    cur = rng.integers(-th // 2, 2 * th, size=(n, sample_lanes))  # mostly firing at assorted rates
    cur[0, 0] = cfg.u_range[1]  # a rail: saturates the membrane
    cur[-1, :] = th // 2  # below threshold: fires only by integrating over steps
    dut = LayerTick(cfg, n, neuron_lanes, sample_lanes)
    C, P = dut.chunks, neuron_lanes * sample_lanes

    def word(chunk):
        lanes = []
        for s in range(sample_lanes):
            for i in range(neuron_lanes):
                k = chunk * neuron_lanes + i
                lanes.append(int(cur[k, s]) if k < n else 0)  # padding neurons: no current
        return lanes

    got = np.zeros((cfg.t_steps, n, sample_lanes), bool)
    cycles = []

    async def bench(ctx):
        for c in range(C):
            ctx.set(dut.cur_addr, c)
            ctx.set(dut.cur_data, word(c))
            ctx.set(dut.cur_we, 1)
            await ctx.tick()
        ctx.set(dut.cur_we, 0)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        for t in range(cfg.t_steps):
            ctx.set(dut.tick, 1)
            await ctx.tick()
            ctx.set(dut.tick, 0)
            n_cycles = 1
            while ctx.get(dut.busy):
                if ctx.get(dut.spikes.valid):
                    chunk = ctx.get(dut.spikes.payload.chunk)
                    bits = ctx.get(dut.spikes.payload.bits)
                    for p in range(P):
                        s, i = divmod(p, neuron_lanes)
                        k = chunk * neuron_lanes + i
                        if k < n:
                            got[t, k, s] = (bits >> p) & 1
                        else:
                            assert not (bits >> p) & 1, "a padding neuron spiked"
                await ctx.tick()
                n_cycles += 1
            cycles.append(n_cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    u = np.zeros((n, sample_lanes), np.int64)
    for t in range(cfg.t_steps):
        u, spikes = lif_update(u, cur, cfg)
        assert np.array_equal(got[t], spikes), f"time step {t}"
    assert got.any() and not got.all()
    assert max(cycles) <= C + 3  # one chunk per clock plus the read latency and hand-over
