"""Drive rtl.learner.Learner in Amaranth's simulator through LearnerSession, next to the golden model."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from rfsnn.host.backends import random_problem  # noqa: F401  (the tests' problems)
from rfsnn.rtl.learner import Learner
from rfsnn.sim.contract.commands import Op
from rfsnn.sim.contract.config import DeviceConfig, StepParams
from rfsnn.sim.golden import GoldenModel
from rfsnn.sim.session import LearnerSession


def amaranth_transact(ctx, dut):
    async def transact(op, index, value):
        ctx.set(dut.cmd.payload.op, op)
        ctx.set(dut.cmd.payload.index, index)
        ctx.set(dut.cmd.payload.data, value)
        ctx.set(dut.cmd.valid, 1)
        while not ctx.get(dut.cmd.ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.cmd.valid, 0)
        ctx.set(dut.rsp.ready, 1)
        while not ctx.get(dut.rsp.valid):
            await ctx.tick()
        status, data = ctx.get(dut.rsp.payload.status), ctx.get(dut.rsp.payload.data)
        await ctx.tick()
        ctx.set(dut.rsp.ready, 0)
        return status, data
    return transact


@dataclass
class Trace:
    outputs: np.ndarray | None = None
    infer_loss: int = 0
    steps: list = field(default_factory=list)  # (StepReport, params after, counters)


def run_learner(cfg: DeviceConfig, params, x, t, steps: list[StepParams], neuron_lanes=1, sample_lanes=4,
                script=None, **learner_options) -> Trace:
    """Load, infer once, then run each step; what the device reports, read back over commands."""
    dut = Learner(cfg, neuron_lanes, sample_lanes, **learner_options)
    trace = Trace()

    async def bench(ctx):
        s = LearnerSession(amaranth_transact(ctx, dut), cfg)
        if script is not None:
            await script(s)
            return
        await s.write_params(params)
        await s.load_batch(x, t)
        trace.infer_loss = await s.infer()
        trace.outputs = await s.read_outputs(len(x))
        for sp in steps:
            await s.call(Op.CLEAR_COUNTERS)
            report = await s.train_step(sp)
            trace.steps.append((report, await s.read_params(), await s.counters()))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return trace


def assert_matches_golden(cfg, params, x, t, steps, trace: Trace):
    g = GoldenModel(cfg)
    y = g.infer(params, x)
    assert np.array_equal(trace.outputs, y), f"outputs: rtl {trace.outputs.ravel()} golden {y.ravel()}"
    assert trace.infer_loss == g.loss(params, x, t)
    p = [np.asarray(a, np.int64) for a in params]
    for n, (sp, (report, p_rtl, counters)) in enumerate(zip(steps, trace.steps)):
        p, res = g.train_step(p, x, t, sp)
        assert report.losses == res.losses, f"step {n}: losses"
        assert report.steps == res.steps, f"step {n}: scalar steps"
        for l, (a, b) in enumerate(zip(p_rtl, p)):
            bad = np.argwhere(a != b)
            assert not len(bad), f"step {n}: layer {l} weight {tuple(bad[0])}: rtl {a[tuple(bad[0])]} golden {b[tuple(bad[0])]}"
        spikes = [counters[f"spikes{h}"] for h in range(len(cfg.layers) - 2)]
        assert spikes == res.counters.spikes, f"step {n}: spike counters"
        assert counters["spike_fanout"] == res.counters.spike_fanout
    return p
