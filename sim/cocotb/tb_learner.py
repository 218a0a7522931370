"""rtl.learner.Learner on a Verilog simulator, driven through LearnerSession like a host would.

The job comes from a JSON file named by RFSNN_JOB (written by rfsnn.sim.learner_sim.simulate):

    {"config": DeviceConfig.to_dict(), "neuron_lanes": N, "sample_lanes": S, "timeout_cycles": C,
     "runs": [{"params": [[[...]]], "x": [[...]], "t": [[...]], "steps": [StepParams.to_dict(), ...]}, ...]}

(a job with "params", "x", "t", "steps" at the top level instead of "runs" is one run). For each run the
testbench loads the weights and the batch, runs one INFER (loss, outputs y), then each step: clear the
counters, TRAIN_STEP, read the losses, steps, cycles, the weights and the counters. A job may also hold
"script": [[op, index, data], ...], raw commands sent first, in order, whose responses are recorded as
they come (refusals included) under "script". The results go to the JSON file named by RFSNN_RESULTS;
comparing them with the golden model is learner_sim's job, so a mismatch does not fail this test (a
device error, a hang or a refused command in a run does).

Port mapping: Amaranth exports a stream's struct payload as one flat port, fields packed from bit 0 in
declaration order (cmd__payload = {data, index, op}, rsp__payload = {data, status}); the offsets are
taken from the layouts in rfsnn.sim.contract.commands.

Timing: rsp__ready is held high, so every response is valid for exactly one clock. A command is put on
cmd__payload at a falling edge and cmd__valid stays high until its response is read; the Learner
raises cmd__ready only in IDLE with no response pending, so the command is accepted exactly once. A
command answered in one clock is read two clocks later (one Timer); anything longer (a memory read, or
INFER / TRAIN_STEP) waits on a rising edge of rsp__valid, so the simulator runs freely without a
Python callback per clock.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer, with_timeout

from rfsnn.rtl.commands import COMMAND, RESPONSE
from rfsnn.sim.contract.commands import Op
from rfsnn.sim.contract.config import DeviceConfig, StepParams
from rfsnn.sim.session import LearnerSession

PERIOD_NS = 10
MASK64 = (1 << 64) - 1


def _offsets(layout) -> dict[str, tuple[int, int]]:
    return {name: (field.offset, field.width) for name, field in layout}


class VerilogLink:
    """`transact(op, index, data) -> (status, data)` on the dut's ports, plus timing of long commands."""

    def __init__(self, dut, timeout_cycles: int):
        self.dut = dut
        c, r = _offsets(COMMAND), _offsets(RESPONSE)
        self.op_off, self.index_off, self.data_off = c["op"][0], c["index"][0], c["data"][0]
        self.st_off, self.st_mask = r["status"][0], (1 << r["status"][1]) - 1
        self.rd_off, self.rd_mask = r["data"][0], (1 << r["data"][1]) - 1
        self.falling = FallingEdge(dut.clk)
        self.rsp_rise = RisingEdge(dut.rsp__valid)
        self.two_clocks = Timer(2 * PERIOD_NS, unit="ns")
        self.timeout_ns = timeout_cycles * PERIOD_NS
        self.in_step = False  # the first command (or one after a long wait) takes the slow path
        self.last_seconds = {}  # op -> wall-clock seconds of its last transaction
        self.commands = 0

    async def transact(self, op: int, index: int, value: int) -> tuple[int, int]:
        dut = self.dut
        long_op = op in (Op.TRAIN_STEP, Op.INFER)
        t0 = time.perf_counter() if long_op else 0.0
        dut.cmd__payload.value = (op << self.op_off) | (index << self.index_off) | ((value & MASK64) << self.data_off)
        dut.cmd__valid.value = 1
        got = False
        if self.in_step:
            # Steady state: we stand on a falling edge where the previous response is valid; it is
            # consumed at the next rising edge and this command accepted at the one after.
            await self.two_clocks
            got = dut.rsp__valid.value == 1
        if not got:
            try:
                await with_timeout(self.rsp_rise, self.timeout_ns, "ns")
            except TimeoutError:
                raise TimeoutError(f"no response to {Op(op).name}(index={index}, value={value}) within "
                                   f"{self.timeout_ns // PERIOD_NS} clocks") from None
            await self.falling
        raw = dut.rsp__payload.value
        if not raw.is_resolvable:
            raise ValueError(f"{Op(op).name}(index={index}, value={value}): the response holds unknown bits "
                             f"(rsp__payload = {raw}, status = bits {self.st_off}.., data = bits {self.rd_off}..)")
        rsp = int(raw)
        dut.cmd__valid.value = 0  # a following transact raises it again in this same time step
        self.in_step = True
        self.commands += 1
        if long_op:
            self.last_seconds[op] = time.perf_counter() - t0
        return (rsp >> self.st_off) & self.st_mask, (rsp >> self.rd_off) & self.rd_mask


def _load_job() -> dict:
    job = json.loads(Path(os.environ["RFSNN_JOB"]).read_text())
    if "runs" not in job:
        job["runs"] = [{k: job.pop(k) for k in ("params", "x", "t", "steps")}]
    return job


@cocotb.test()
async def run_job(dut):
    job = _load_job()
    out_path = Path(os.environ["RFSNN_RESULTS"])
    cfg = DeviceConfig.from_dict(job["config"])
    results = {"runs": [], "error": None}
    t_start = time.perf_counter()
    Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()  # toggled in C, not by a Python task
    dut.rst.value = 1
    dut.cmd__valid.value = 0
    dut.cmd__payload.value = 0
    dut.rsp__ready.value = 1
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)

    link = VerilogLink(dut, int(job.get("timeout_cycles", 10_000_000)))
    s = LearnerSession(link.transact, cfg)
    try:
        info_cfg, n_lanes, s_lanes = await s.info()
        results["info"] = {"config": info_cfg.to_dict(), "neuron_lanes": n_lanes, "sample_lanes": s_lanes}
        if "script" in job:
            results["script"] = [list(await link.transact(op, index, data)) for op, index, data in job["script"]]
        for run in job["runs"]:
            params = [np.array(p, np.int64) for p in run["params"]]
            x, t = np.array(run["x"], np.int64), np.array(run["t"], np.int64)
            r = {"steps": []}
            results["runs"].append(r)
            t0 = time.perf_counter()
            await s.write_params(params)
            await s.load_batch(x, t)
            r["load_seconds"] = time.perf_counter() - t0
            await s.call(Op.CLEAR_COUNTERS)
            r["infer_loss"] = await s.infer()
            r["infer_seconds"] = link.last_seconds[Op.INFER]
            r["infer_cycles"] = (await s.counters())["cycles_last"]
            r["y"] = (await s.read_outputs(len(x))).tolist()
            for spd in run["steps"]:
                sp = StepParams(**spd)
                await s.call(Op.CLEAR_COUNTERS)
                report = await s.train_step(sp)
                seconds = link.last_seconds[Op.TRAIN_STEP]
                counters = await s.counters()
                weights = await s.read_params()
                r["steps"].append({"losses": report.losses, "steps": report.steps, "cycles": report.cycles,
                                   "seconds": seconds, "counters": counters,
                                   "params": [w.tolist() for w in weights]})
    except Exception as e:  # keep what was measured; learner_sim reports the error
        results["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        results["commands"] = link.commands
        results["wall_seconds"] = time.perf_counter() - t_start
        out_path.write_text(json.dumps(results))
