"""rtl.learner.frontend.CommandFrontEnd alone: the register file, the counters, the responses, and the
handshake with the sequencer (a testbench stands in for it, the walker and the RAMs)."""
import pytest
from amaranth import Value
from amaranth.sim import Simulator

from rfsnn.rtl.learner.frontend import CommandFrontEnd
from rfsnn.rtl.learner.memories import MemoryMap
from rfsnn.sim.contract.commands import Counter, Op, Reg, Status, info_words
from rfsnn.sim.contract.config import DeviceConfig, register_limits

from learnersim import amaranth_transact

CFG = DeviceConfig(layers=(2, 4, 3, 1), t_steps=8, max_batch=16, max_directions=4)
MASK = (1 << 64) - 1


def front_end(cfg=CFG, n=1, s=2):
    return CommandFrontEnd(cfg, n, s, info_words(cfg, n, s), MemoryMap(cfg, n, s))


def run(dut, *benches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(benches[0])
    for bench in benches[1:]:
        sim.add_testbench(bench, background=True)
    sim.run()


def test_set_takes_legal_values_and_refuses_the_rest():
    """Every register; DATA_SEED is no register here: a legal value loads the drawer's stream (draw.load)."""
    dut = front_end()
    limits = register_limits(CFG)
    seen, loads = [], []

    async def drawer(ctx):
        async for _, _, load, data_seed in ctx.tick().sample(dut.draw.load, dut.draw.data_seed):
            if load:
                loads.append(data_seed)

    async def bench(ctx):
        transact = amaranth_transact(ctx, dut)
        assert [ctx.get(dut.batch), ctx.get(dut.directions), ctx.get(dut.sigma), ctx.get(dut.gain_shift),
                ctx.get(dut.samples)] == [1, 1, 64, 1, 1]
        for reg in Reg:
            name = reg.name.lower()
            lo, hi = limits[name]
            register = None if reg == Reg.DATA_SEED else Value.cast(getattr(dut, name))
            value_of = (lambda: len(loads)) if register is None else lambda: ctx.get(register)
            before = value_of()
            for value in [hi + 1, lo - 1, 1 << 40]:
                if value >= 0:
                    seen.append((name, value, (await transact(Op.SET, reg, value & MASK))[0]))
                    assert value_of() == before, (name, value)
            assert await transact(Op.SET, reg, hi) == (Status.OK, 0)
            assert (loads == [hi]) if reg == Reg.DATA_SEED else value_of() == hi, name
        assert (await transact(Op.SET, len(Reg), 0))[0] == Status.RANGE
        assert await transact(Op.SET, Reg.MODE, 0b0101) == (Status.OK, 0)
        assert [ctx.get(dut.mode.gauss4), ctx.get(dut.mode.forward), ctx.get(dut.mode.layerwise),
                ctx.get(dut.mode.stochastic_rounding)] == [1, 0, 1, 0]

    run(dut, bench, drawer)
    assert seen and all(status == Status.RANGE for _, _, status in seen), seen


@pytest.mark.parametrize("layers", [(2, 4, 3, 1), (2, 5, 1)])
def test_runs_wait_for_the_sequencer_and_count(layers):
    """INFER and TRAIN_STEP strobe the sequencer, are answered with its result when it is done, and the
    counters count their busy clocks and the forward engine's spike reports."""
    cfg = DeviceConfig(layers=layers, t_steps=8, max_batch=16, max_directions=4)
    H = len(layers) - 2
    dut = front_end(cfg)
    plans = {"infer": (20, 0x1234, {3: (0, 2), 7: (H - 1, 1), 19: (0, 3)}), "train": (5, 9, {0: (H - 1, 2)})}
    log, got = [], {}

    async def sequencer(ctx):
        while True:
            _, _, infer, train = await ctx.tick().sample(dut.infer, dut.train)
            assert not (infer and train)
            if not (infer or train):
                continue
            kind = "infer" if infer else "train"
            log.append(kind)
            clocks, result, reports = plans[kind]
            for n in range(clocks):  # the busy clocks
                assert ctx.get(dut.busy) and not ctx.get(dut.cmd.ready)
                if n in reports:
                    ctx.set(dut.spikes.valid, 1)
                    ctx.set(dut.spikes.payload.layer, reports[n][0])
                    ctx.set(dut.spikes.payload.count, reports[n][1])
                ctx.set(dut.done, n == clocks - 1)
                ctx.set(dut.result, result)
                await ctx.tick()
                ctx.set(dut.spikes.valid, 0)
                ctx.set(dut.done, 0)
            assert not ctx.get(dut.busy)

    async def host(ctx):
        transact = amaranth_transact(ctx, dut)

        async def counters():
            return [(await transact(Op.READ_COUNTER, c, 0))[1] for c in range(Counter.SPIKES + H)]

        got["infer"] = await transact(Op.INFER, 0, 0)
        got["after_infer"] = await counters()
        got["train"] = await transact(Op.TRAIN_STEP, 0, 0)
        got["after_train"] = await counters()
        assert await transact(Op.CLEAR_COUNTERS, 0, 0) == (Status.OK, 0)
        got["cleared"] = await counters()
        got["past"] = (await transact(Op.READ_COUNTER, Counter.SPIKES + H, 0))[0]

    run(dut, host, sequencer)
    assert log == ["infer", "train"]
    assert got["infer"] == (Status.OK, 0x1234) and got["train"] == (Status.OK, 9)
    spikes = [sum(c for h, c in plans["infer"][2].values() if h == layer) for layer in range(H)]
    fanout = sum(c * layers[h + 2] for h, c in plans["infer"][2].values())
    assert got["after_infer"] == [20, 20, fanout] + spikes
    spikes[H - 1] += 2
    assert got["after_train"] == [25, 5, fanout + 2 * layers[H + 1]] + spikes
    assert got["cleared"] == [0] * (3 + H)
    assert got["past"] == Status.RANGE


def test_parameter_and_ram_reads_and_refusals():
    dut = front_end()
    got = {}

    async def bench(ctx):
        transact = amaranth_transact(ctx, dut)
        ctx.set(dut.params.weight, -5)
        ctx.set(dut.loss_rd.data, 77)
        ctx.set(dut.step_rd.data, -3)
        got["read"] = await transact(Op.PARAM_READ, 0, 0)
        got["loss"] = await transact(Op.READ_LOSS, 2, 0)
        got["step"] = await transact(Op.READ_STEP, 1, 0)
        got["step_past"] = (await transact(Op.READ_STEP, CFG.max_directions, 0))[0]
        got["loss_past"] = (await transact(Op.READ_LOSS, 2 * CFG.max_directions + 1, 0))[0]
        got["info"] = await transact(Op.INFO, 0, 0)
        got["info_past"] = (await transact(Op.INFO, len(info_words(CFG, 1, 2)), 0))[0]
        got["big_weight"] = (await transact(Op.PARAM_WRITE, 0, 1 << (CFG.w_bits - 1)))[0]
        ctx.set(dut.params.done, 1)
        got["past_end_write"] = (await transact(Op.PARAM_WRITE, 0, 1))[0]
        got["past_end_read"] = (await transact(Op.PARAM_READ, 0, 0))[0]
        got["unknown"] = (await transact(200, 0, 0))[0]
        assert await transact(Op.NOP, 0, 0) == (Status.OK, 0)

    run(dut, bench)
    assert got["read"] == (Status.OK, -5 & MASK)  # sign-extended to 64 bits
    assert got["loss"] == (Status.OK, 77) and got["step"] == (Status.OK, -3 & MASK)
    assert got["info"] == (Status.OK, info_words(CFG, 1, 2)[0])
    assert got.pop("unknown") == Status.UNKNOWN
    for name in ("step_past", "loss_past", "info_past", "big_weight", "past_end_write", "past_end_read"):
        assert got[name] == Status.RANGE, name
