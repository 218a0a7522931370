"""rtl.lfsr.NoiseLFSR against the golden noise stream, in Amaranth's simulator."""

import numpy as np
import pytest

from rfsnn.rtl.learner.lfsr import NoiseLFSR
from rfsnn.sim.contract import lfsr as model
from rfsnn.sim.contract.config import MAXIMAL_TAPS


def run_lfsr(simulate, width, lanes, seeds, n_clocks, stall_every=0):
    """Load each seed, consume n_clocks words (with optional stalls), return the bits seen per seed."""
    dut = NoiseLFSR(width=width, lanes=lanes)
    got = []

    async def bench(ctx):
        for seed in seeds:
            ctx.set(dut.seed, seed)
            ctx.set(dut.load, 1)
            ctx.set(dut.bits.ready, 0)
            await ctx.tick()
            ctx.set(dut.load, 0)
            bits, clock = [], 0
            while len(bits) < n_clocks * lanes:
                stall = stall_every and clock % stall_every == stall_every - 1
                ctx.set(dut.bits.ready, 0 if stall else 1)
                assert ctx.get(dut.bits.valid)
                if not stall:
                    word = ctx.get(dut.bits.payload)
                    bits += [(word >> i) & 1 for i in range(lanes)]
                await ctx.tick()
                clock += 1
            got.append(np.array(bits, np.uint8))

    simulate(dut, bench)
    return got


@pytest.mark.parametrize("width,lanes", [(32, 1), (32, 8), (32, 13), (16, 4), (8, 3)])
def test_stream_equals_golden(width, lanes, simulate):
    seeds = [0x12345678 & ((1 << width) - 1), 1, 0]  # includes the zero seed
    got = run_lfsr(simulate, width, lanes, seeds, n_clocks=40, stall_every=3)
    for seed, bits in zip(seeds, got):
        assert np.array_equal(bits, model.stream_bits(seed, len(bits), width, MAXIMAL_TAPS[width])), hex(seed)


def test_replay_after_reload(simulate):
    a, b = run_lfsr(simulate, 32, 5, [777, 777], n_clocks=30)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("lanes,wide", [(1, 8), (1, 3), (2, 5)])
def test_two_rates_continue_one_stream(lanes, wide, simulate):
    """Bits taken `lanes` at a time and `wide` at a time, in any order (with stalls), are the stream in order:
    how the learner draws its factors one bit per clock and then takes step_frac rounding bits per clock."""
    dut = NoiseLFSR(width=32, lanes=lanes, wide_lanes=wide)
    plan = np.random.default_rng(lanes * 10 + wide).integers(0, 3, size=120)  # 0: stall, 1: narrow, 2: wide
    seed = 0xB5AD4ECE
    bits = []

    async def bench(ctx):
        ctx.set(dut.seed, seed)
        ctx.set(dut.load, 1)
        await ctx.tick()
        ctx.set(dut.load, 0)
        for what in plan:
            ctx.set(dut.bits.ready, int(what == 1))
            ctx.set(dut.wide_bits.ready, int(what == 2))
            assert ctx.get(dut.bits.valid) and ctx.get(dut.wide_bits.valid)
            if what:
                n, word = (lanes, ctx.get(dut.bits.payload)) if what == 1 else (wide, ctx.get(dut.wide_bits.payload))
                bits.extend((word >> i) & 1 for i in range(n))
            await ctx.tick()

    simulate(dut, bench)
    assert (plan == 1).any() and (plan == 2).any()
    assert np.array_equal(np.array(bits, np.uint8), model.stream_bits(seed, len(bits), 32, MAXIMAL_TAPS[32]))


@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])  # a 20 s build
def test_verilog_stream_equals_golden(simulator, tmp_path, require_simulator):
    """The exported Verilog, on a real simulator under cocotb, gives the golden stream."""
    from rfsnn.sim import rtlsim

    require_simulator(simulator)
    rtlsim.run(NoiseLFSR(width=32, lanes=8), "noise_lfsr", "rfsnn.sim.cocotb.tb_lfsr", simulator,
               build_dir=tmp_path, extra_env={"LFSR_WIDTH": "32", "LFSR_LANES": "8", "SEEDS": "0x9e3779b9,0,1",
                                              "WORDS": "150"})
