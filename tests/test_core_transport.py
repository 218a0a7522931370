"""The real host driver (host.link.Device) against the real gateware (rtl.top.DeviceCore in Amaranth's
simulator, through sim.core_transport.SimulatedCore): weights, batches, pipelined training steps and
recovery from faults on the line, bit-identical with the golden model, in seconds and without a
Verilog build. tests/test_protocol.py runs the same faults against the software device."""
import dataclasses

import numpy as np
import pytest

from rfsnn.host.backends import random_problem
from rfsnn.host.link import Device
from rfsnn.sim.contract import protocol as P
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.core_transport import SimulatedCore
from rfsnn.sim.golden import GoldenModel
from rfsnn.sim.learner_sim import make_steps

CFG = DeviceConfig(layers=(2, 4, 1), t_steps=4, max_batch=8, max_directions=2)
LANES = (1, 2)
TIMEOUT = 0.2  # wall-clock seconds, as the host counts them; the simulated device needs far fewer of its own


class FaultyLink:
    """Any transport, with scheduled faults: `faults[n]` acts on the n-th frame the host writes (0-based)
    or on the reply to it."""

    def __init__(self, inner, faults=None):
        self.inner, self.faults, self.n = inner, faults or {}, 0
        self.reply_fault, self.held = None, bytearray()

    def write(self, data: bytes) -> None:
        fault = self.faults.get(self.n)
        self.n += 1
        if fault == "drop-request":
            return
        if fault == "corrupt-request":
            data = bytearray(data)
            data[len(data) // 2] ^= 0x20
            data = bytes(data)
        if fault == "garbage-before":
            data = b"\x13\x37\xdb\x00" + data
        if fault == "truncate-then-reset":  # half a frame, then the sender starts over (its frame begins with END)
            self.inner.write(data[:len(data) // 2])
        if fault in ("drop-reply", "corrupt-reply", "duplicate-reply"):
            self.reply_fault = fault
        self.inner.write(data)

    def read(self, timeout: float) -> bytes:
        data = self.inner.read(timeout)
        if self.reply_fault is None:
            return data
        self.held += data  # the reply to the faulted frame: END, body, END
        ends = [i for i, b in enumerate(self.held) if b == P.END]
        if len(ends) < 2:
            return b""
        frame, rest = bytes(self.held[:ends[1] + 1]), bytes(self.held[ends[1] + 1:])
        fault, self.reply_fault, self.held = self.reply_fault, None, bytearray()
        if fault == "drop-reply":
            return rest
        if fault == "corrupt-reply":
            damaged = bytearray(frame)
            damaged[len(frame) // 2] ^= 0x01
            return bytes(damaged) + rest
        return frame + frame + rest  # duplicate-reply


def golden_run(params, x, t, steps):
    g = GoldenModel(CFG)
    out = []
    for sp in steps:
        params, res = g.train_step(params, x, t, sp)
        out.append(res)
    return params, out


def test_the_host_driver_trains_the_simulated_gateware_bit_exactly():
    params, x, t = random_problem(CFG, 7, seed=2)
    steps = make_steps(CFG, 7, 3, seed=5, directions=2)
    steps[1] = dataclasses.replace(steps[1], noise="gauss4", difference="forward", scope="layerwise")
    core = SimulatedCore(CFG, *LANES)
    dev = Device(core, expect=CFG, timeout=TIMEOUT)
    assert (dev.neuron_lanes, dev.sample_lanes) == LANES
    dev.write_params(params)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))
    dev.load_batch(x, t)
    g = GoldenModel(CFG)
    assert dev.infer() == g.loss(params, x, t)
    assert np.array_equal(dev.read_outputs(len(x)), g.infer(params, x))
    replies = [dev.train_step(steps[0])]
    replies += [dev.train_step(sp, batch=(x, t)) for sp in steps[1:]]  # the next batch rides behind each step
    expected, results = golden_run(params, x, t, steps)
    assert [(r.losses, r.steps, r.repeated) for r in replies] == [(res.losses, res.steps, False) for res in results]
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), expected))
    assert dev.retried == 0 and core.cycles > 0


@pytest.mark.parametrize("fault", ["drop-request", "corrupt-request", "garbage-before", "truncate-then-reset",
                                   "drop-reply", "corrupt-reply", "duplicate-reply"])
def test_the_gateware_and_the_host_recover_from_faults_and_never_train_twice(fault):
    params, x, t = random_problem(CFG, 6, seed=3)
    steps = make_steps(CFG, 6, 3, seed=9, directions=2)
    line = FaultyLink(SimulatedCore(CFG, *LANES))
    dev = Device(line, expect=CFG, timeout=TIMEOUT)
    dev.write_params(params)
    dev.load_batch(x, t)
    dev.train_step(steps[0])
    line.faults = {line.n: fault}  # the next frame: the SETs and TRAIN_STEP of step 1
    replies = [dev.train_step(sp) for sp in steps[1:]]
    expected, results = golden_run(params, x, t, steps)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), expected))
    assert [r.losses for r in replies] == [res.losses for res in results[1:]]
    assert dev.request([P.step_count()]) == [3]  # the gateware's own count: no step ran twice
    assert dev.retried == (0 if fault in ("garbage-before", "duplicate-reply", "truncate-then-reset") else 1)
    assert replies[0].repeated == (fault in ("drop-reply", "corrupt-reply"))  # ran once, answered twice
