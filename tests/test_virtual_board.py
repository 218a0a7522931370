"""The virtual board (sim/virtual_board.py): the whole gateware, real UART included, on Verilator behind a
pseudo-terminal, driven through pyserial by the same host code as a board.

One small board is built once for the module (about 20 s) and shared; `--backend rtl` starts a second
one from the same build.
"""
import dataclasses
import json

import numpy as np
import pytest

from rfsnn.sim.contract import protocol as P
from rfsnn.host.backends import LinkOptions
from rfsnn.host.link import Device, LinkError, SerialTransport
from rfsnn.host.runfolder import RUN_ID_KEY, STATE_KEY
from rfsnn.host.train import settings_for, train
from rfsnn.host.backends import random_problem
from rfsnn.sim.learner_sim import make_steps
from rfsnn.sim.virtual_board import BoardSpec, VirtualBoard

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("virtual-board")]  # one model build

SETTINGS = dict(hidden=(6,), t_steps=4, steps=8, batch=24, directions=2, n_train=256, eval_every=4)
CFG = settings_for("poisson1d", **SETTINGS).device_config(1)
LANES = (1, 2)
TIMEOUT = 60.0  # a virtual board is slow; nothing here takes more than a second or two


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("virtual-board")


@pytest.fixture(scope="module")
def board(build_dir, require_simulator):
    require_simulator("verilator")
    with VirtualBoard.launch(BoardSpec(CFG, *LANES), build_dir) as vb:
        yield vb


class FaultySerial(SerialTransport):
    """A serial port whose n-th write (0-based) is damaged as `faults[n]` says."""

    def __init__(self, port, faults=None):
        super().__init__(port)
        self.faults, self.n = faults or {}, 0

    def write(self, data):
        fault = self.faults.get(self.n)
        self.n += 1
        if fault == "drop":
            return
        if fault == "corrupt":
            data = bytearray(data)
            data[len(data) // 2] ^= 0x10
        elif fault == "extra-bytes":
            data = b"\x13\x37\xdb\x00\xc0\x55" + data
        elif fault == "truncate-then-reset":  # half a frame, then the sender starts over
            super().write(data[:len(data) // 2])
        elif fault == "duplicate":
            super().write(data)
        super().write(bytes(data))


def open_device(board, faults=None, **kw) -> tuple[Device, FaultySerial]:
    line = FaultySerial(board.port, faults)
    return Device(line, expect=CFG, timeout=kw.pop("timeout", TIMEOUT), **kw), line


def saved_arrays(npz) -> dict:
    """A run file's arrays but its run id, which is each run's own."""
    with np.load(npz) as z:
        return {k: z[k] for k in z.files if k != RUN_ID_KEY}


def golden_device():
    from rfsnn.host.link import LoopbackTransport
    from rfsnn.sim.endpoint import DeviceEndpoint
    from rfsnn.sim.golden_device import GoldenDevice

    gd = GoldenDevice(CFG)
    return Device(LoopbackTransport(DeviceEndpoint(gd.execute, CFG, bulk=gd)), expect=CFG)


def test_info_over_the_pseudo_terminal(board, capsys):
    from rfsnn.host import cli

    assert cli.main(["info", "--port", board.port, "--timeout", str(TIMEOUT)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"] == CFG.to_dict() and (info["neuron_lanes"], info["sample_lanes"]) == LANES


def test_training_over_the_virtual_board_is_bit_identical_to_golden(board, tmp_path):
    """`--backend serial` to the virtual board: real pyserial, real UART, pipelined batches."""
    s = settings_for("poisson1d", **SETTINGS, backend="serial")
    m = train(s, tmp_path / "board", progress=False, link=LinkOptions(port=board.port, timeout=TIMEOUT))
    g = train(settings_for("poisson1d", **SETTINGS), tmp_path / "golden", progress=False)
    a, b = saved_arrays(tmp_path / "board" / "weights.npz"), saved_arrays(tmp_path / "golden" / "weights.npz")
    assert sorted(a) == sorted(b) and "W1_int" in a
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert m["test_rel_l2"] == g["test_rel_l2"] and m["counters"] == g["counters"]
    assert {p.name for p in (tmp_path / "board").iterdir()} == {p.name for p in (tmp_path / "golden").iterdir()}
    # The last checkpoint: at the same step, of the same weights.
    a, b = saved_arrays(tmp_path / "board" / "checkpoint.npz"), saved_arrays(tmp_path / "golden" / "checkpoint.npz")
    assert json.loads(str(a.pop(STATE_KEY)))["step"] == json.loads(str(b.pop(STATE_KEY)))["step"] > 0
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_backend_rtl_starts_its_own_board(build_dir, tmp_path, capsys, require_simulator):
    from rfsnn.host import cli

    require_simulator("verilator")
    args = ["train", "--task", "poisson1d", "--hidden", "6", "--t-steps", "4", "--steps", "3", "--batch", "24",
            "--directions", "2", "--quiet", "--sample-lanes", str(LANES[1]), "--build-dir", str(build_dir)]
    assert cli.main(args + ["--backend", "rtl", "--out", str(tmp_path / "rtl")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "golden")]) == 0
    assert "port: " not in capsys.readouterr().out.replace("rfsnn info --port", "")  # only status lines
    a, b = saved_arrays(tmp_path / "rtl" / "weights.npz"), saved_arrays(tmp_path / "golden" / "weights.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fault", ["drop", "corrupt", "extra-bytes", "truncate-then-reset", "duplicate"])
def test_line_faults_are_recovered_and_never_train_twice(board, fault):
    params, x, t = random_problem(CFG, 20, seed=3)
    steps = make_steps(CFG, 20, 3, seed=9, directions=2)
    ref = golden_device()
    dev, line = open_device(board, timeout=2.0)  # a lost frame costs one timeout
    start = dev.steps_done  # the board is shared with the other tests
    for d in (ref, dev):
        d.write_params(params)
        d.load_batch(x, t)
        d.train_step(steps[0])
    line.faults = {line.n: fault}  # the next frame: the SETs and TRAIN_STEP of step 1
    replies = [dev.train_step(sp) for sp in steps[1:]]
    expected = [ref.train_step(sp) for sp in steps[1:]]
    assert [r.losses for r in replies] == [e.losses for e in expected]
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), ref.read_params()))
    assert dev.request([P.step_count()])[0] == start + 3  # trained exactly 3 times
    if fault in ("drop", "corrupt"):
        assert dev.retried > 0  # (a refusal of the extra bytes may also prompt a harmless resend)


def test_a_damaged_frame_changes_nothing(board):
    params, _, _ = random_problem(CFG, 1, seed=5)
    dev, line = open_device(board)
    dev.write_params(params)
    wire = bytearray(P.frame(P.encode_request_payload(7, [P.param_seek(0), P.param_write([1000] * 6)], dev.vb)))
    wire[5] ^= 0x01
    line.write(bytes(wire))
    deframer, got = P.Deframer(), []
    while not got:
        data = line.read(TIMEOUT)
        assert data, "no reply"
        got = deframer.feed(data)
    reply = P.decode_reply(got[0].payload)
    assert (reply.seq, reply.status) == (0xFF, P.LinkStatus.BAD_CRC)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))


def test_a_mismatched_configuration_is_refused_naming_both_values(board):
    with pytest.raises(LinkError, match=r"built for t_steps = 4, but this run needs t_steps = 8"):
        Device(SerialTransport(board.port), expect=dataclasses.replace(CFG, t_steps=8), timeout=TIMEOUT)
