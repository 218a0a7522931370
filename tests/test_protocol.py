"""The host link protocol (docs/protocol.md): codec properties, resynchronisation, and the Device API
over the golden device, with faults on the line."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rfsnn.sim.contract import protocol as P
from rfsnn.host.link import Device, LinkError, LoopbackTransport
from rfsnn.sim.endpoint import DeviceEndpoint
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden import GoldenModel, base_loss
from rfsnn.sim.golden_device import GoldenDevice
from rfsnn.host.backends import random_problem
from rfsnn.sim.learner_sim import make_steps

CFG = DeviceConfig(layers=(2, 6, 5, 2), t_steps=8, max_batch=64, max_directions=8)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=P.MAX_PAYLOAD), st.binary(max_size=40))
def test_frames_survive_any_payload_and_leading_garbage(payload, garbage):
    d = P.Deframer()
    got = d.feed(garbage + P.frame(payload))
    good = [r.payload for r in got if r.payload is not None]
    assert good == [payload]  # whatever the garbage was, the frame after it arrives intact


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=60), st.data())
def test_a_damaged_frame_is_refused(payload, data):
    wire = bytearray(P.frame(payload))
    i = data.draw(st.integers(1, len(wire) - 2), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")
    wire[i] ^= flip
    got = P.Deframer().feed(bytes(wire))
    assert all(r.payload != payload for r in got)  # never taken for the original
    assert all(r.payload is None or len(got) > 1 for r in got)  # refused (unless an END split it)


def requests_strategy():
    value = st.integers(-(1 << 15), (1 << 15) - 1)
    return st.lists(st.one_of(
        st.builds(P.info, st.integers(0, 255)), st.builds(P.set_register, st.integers(0, 8), st.integers(0, 2**32 - 1)),
        st.builds(P.param_seek, st.integers(0, 3), st.integers(0, 999), st.integers(0, 999)),
        st.builds(P.param_write, st.lists(value, max_size=20)), st.builds(P.param_read, st.integers(0, 20)),
        st.builds(P.sample_write, st.lists(value, max_size=20)), st.builds(P.train_step, st.integers(0, 65535)),
        st.builds(P.infer), st.builds(P.step_count), st.builds(P.read_step, st.integers(0, 31))), max_size=6)


@given(requests_strategy(), st.integers(0, 254))
def test_requests_round_trip(requests, seq):
    payload = P.encode_request_payload(seq, requests, 2)
    parsed = P.parse_requests(payload, 2)
    assert parsed.seq == seq and parsed.requests == requests and parsed.unknown_at is None


def test_truncated_request_is_a_length_error():
    payload = P.encode_request_payload(3, [P.param_write([1, 2, 3])], 2)
    with pytest.raises(P.ParseError) as e:
        P.parse_requests(payload[:-1], 2)
    assert e.value.status == P.LinkStatus.BAD_LENGTH


# ---- the Device API over the golden device -------------------------------------------------------------
class FaultyLine(LoopbackTransport):
    """Loopback with scheduled faults: `faults[n]` acts on the n-th host frame (0-based)."""

    def __init__(self, endpoint, faults):
        super().__init__(endpoint)
        self.faults, self.n = faults, 0

    def write(self, data):
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
        if fault == "truncate-then-reset":  # half a frame, then the sender starts over (its next frame begins with END)
            self.endpoint.receive(data[:len(data) // 2])
        super().write(data)
        if fault == "drop-reply":
            self._rx.clear()
        if fault == "corrupt-reply":
            self._rx[len(self._rx) // 2] ^= 0x01
        if fault == "duplicate-reply":
            self._rx += bytes(self._rx)


def golden_run(params, x, t, steps):
    g = GoldenModel(CFG)
    p = [np.asarray(a, np.int64) for a in params]
    out = []
    for sp in steps:
        p, res = g.train_step(p, x, t, sp)
        out.append(res)
    return p, out


def test_link_training_equals_direct_golden_calls():
    params, x, t = random_problem(CFG, 50, seed=2)
    steps = make_steps(CFG, 50, 3, seed=5, directions=3, stochastic_rounding=True)
    steps[1] = dataclasses.replace(steps[1], noise="gauss4", difference="forward", scope="layerwise")
    line = LoopbackTransport(DeviceEndpoint(GoldenDevice(CFG).execute, CFG))
    dev = Device(line, expect=CFG)
    dev.write_params(params)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))
    dev.load_batch(x, t)
    g = GoldenModel(CFG)
    assert dev.infer() == g.loss(params, x, t)
    assert np.array_equal(dev.read_outputs(50), g.infer(params, x))
    replies = [dev.train_step(sp) for sp in steps]
    expected_params, results = golden_run(params, x, t, steps)
    for r, res in zip(replies, results):
        assert r.losses == res.losses and r.steps == res.steps and not r.repeated
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), expected_params))
    assert dev.retried == 0


@pytest.mark.parametrize("fault", ["drop-request", "corrupt-request", "garbage-before", "truncate-then-reset",
                                   "drop-reply", "corrupt-reply", "duplicate-reply"])
def test_faults_are_recovered_by_retrying_and_never_train_twice(fault):
    params, x, t = random_problem(CFG, 20, seed=3)
    steps = make_steps(CFG, 20, 3, seed=9, directions=2)
    endpoint = DeviceEndpoint(GoldenDevice(CFG).execute, CFG)
    line = FaultyLine(endpoint, {})
    dev = Device(line, expect=CFG, timeout=0.01)
    dev.write_params(params)
    dev.load_batch(x, t)
    dev.train_step(steps[0])
    line.faults = {line.n: fault}  # the next frame: the SETs and TRAIN_STEP of step 1
    replies = [dev.train_step(sp) for sp in steps[1:]]
    expected_params, results = golden_run(params, x, t, steps)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), expected_params))
    assert [r.losses for r in replies] == [res.losses for res in results[1:]]
    assert endpoint.steps_done == 3
    # garbage and a half frame are refused by the device, and the good frame after them still runs
    assert dev.retried == (0 if fault in ("garbage-before", "duplicate-reply", "truncate-then-reset") else 1)
    assert (endpoint.frames["refused"] > 0) == (fault in ("garbage-before", "truncate-then-reset", "corrupt-request"))
    assert replies[0].repeated == (fault in ("drop-reply", "corrupt-reply"))  # ran once, answered twice


def test_a_dead_line_names_the_request():
    line = LoopbackTransport(DeviceEndpoint(GoldenDevice(CFG).execute, CFG))
    dev = Device(line, timeout=0.01, retries=2)
    line.write = lambda data: None  # the cable is pulled
    with pytest.raises(LinkError, match=r"INFER: no valid reply after 3 tries in 0\.\d\d s; last: no reply within"):
        dev.infer()


def test_refusals_name_the_request_and_change_nothing():
    line = LoopbackTransport(DeviceEndpoint(GoldenDevice(CFG).execute, CFG))
    dev = Device(line)
    params, x, t = random_problem(CFG, 4, seed=1)
    dev.write_params(params)
    with pytest.raises(LinkError, match=r"PARAM_SEEK\(9, 0, 0\): the device answered RANGE"):
        dev.request([P.param_seek(9)])
    with pytest.raises(LinkError, match=r"TRAIN_STEP\(7,\): the device answered RANGE"):
        dev.request([P.train_step(7)])  # not where training stands
    with pytest.raises(LinkError, match="SET.*RANGE"):
        dev.request([P.set_register(0, 1000)])  # a batch beyond max_batch
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))


def test_a_mismatched_device_is_refused_naming_both_values():
    line = LoopbackTransport(DeviceEndpoint(GoldenDevice(CFG).execute, CFG))
    with pytest.raises(LinkError, match=r"built for leak_shift = 3, but this run needs leak_shift = 4"):
        Device(line, expect=dataclasses.replace(CFG, leak_shift=4))


@settings(max_examples=200)
@given(st.lists(st.sampled_from([P.END, P.ESC, P.ESC_END, P.ESC_ESC, 0x00, 0x41]), max_size=700),
       st.lists(st.integers(1, 50), max_size=30))
def test_verdicts_do_not_depend_on_how_bytes_arrive(stream, cuts):
    """Over-long frames are cut to bounded memory; the verdicts must still be those of the whole stream."""
    data = bytes(stream)
    whole = [(r.payload, r.status) for r in P.Deframer(max_payload=16).feed(data)]
    d, pieces, pos = P.Deframer(max_payload=16), [], 0
    for c in cuts:
        pieces += d.feed(data[pos:pos + c])
        pos += c
    pieces += d.feed(data[pos:])
    assert [(r.payload, r.status) for r in pieces] == whole


def test_info_and_read_weights_over_a_serial_port(tmp_path, capsys):
    """`rfsnn info` and `rfsnn read-weights` through pyserial and a pseudo-terminal, to the golden device."""
    import json

    from rfsnn.host import cli
    from rfsnn.sim.ptyserve import PtyServer

    gd = GoldenDevice(CFG)
    params, _, _ = random_problem(CFG, 1, seed=6)
    gd.params = [p.copy() for p in params]  # as if a run had trained them
    server = PtyServer(DeviceEndpoint(gd.execute, CFG, bulk=gd)).start()
    try:
        assert cli.main(["info", "--port", server.path]) == 0
        info = json.loads(capsys.readouterr().out)
        assert DeviceConfig.from_dict(info["device"]) == CFG and info["training_steps_done"] == 0
        out = tmp_path / "w.npz"
        assert cli.main(["read-weights", "--port", server.path, "--output", str(out)]) == 0
        with np.load(out) as w:
            for l, p in enumerate(params, start=1):
                assert np.array_equal(w[f"W{l}_int"], p[:, :-1]) and np.array_equal(w[f"b{l}_int"], p[:, -1])
                assert np.allclose(w[f"W{l}"], p[:, :-1] / (1 << CFG.w_frac))
        assert server.bytes_in > 0 and server.bytes_out > 0
    finally:
        server.close()
    assert cli.main(["info", "--port", str(tmp_path / "no-such-port")]) == 3
    assert "cannot open serial port" in capsys.readouterr().err


def golden_batches_run(params, batches, steps):
    g = GoldenModel(CFG)
    p = [np.asarray(a, np.int64) for a in params]
    out = []
    for (x, t), sp in zip(batches, steps):
        p, res = g.train_step(p, x, t, sp)
        out.append(res)
    return p, out


@pytest.mark.parametrize("fault_at", ["step-frame", "next-batch-frame"])
@pytest.mark.parametrize("fault", ["drop-request", "corrupt-request", "drop-reply", "corrupt-reply"])
def test_pipelined_steps_recover_from_faults(fault, fault_at):
    """A step's frame is followed by the next batch's frames without waiting. When one of them is lost,
    the device has run the others in order (perhaps overwriting the step's batch): the host finds out
    with STEP_COUNT, sends again what is needed, and the training ends as if nothing happened."""
    params, _, _ = random_problem(CFG, 1, seed=3)
    batches = [random_problem(CFG, 50, seed=s)[1:] for s in (10, 11, 12)]  # two frames each
    steps = make_steps(CFG, 50, 3, seed=9, directions=2)
    endpoint = DeviceEndpoint(GoldenDevice(CFG).execute, CFG)
    line = FaultyLine(endpoint, {})
    dev = Device(line, expect=CFG, timeout=0.01)
    dev.write_params(params)
    replies = [dev.train_step(steps[0], batch=batches[0], next_batch=batches[1])]
    line.faults = {line.n + (0 if fault_at == "step-frame" else 1): fault}
    replies.append(dev.train_step(steps[1], batch=batches[1], next_batch=batches[2], loaded=True))
    replies.append(dev.train_step(steps[2], batch=batches[2], loaded=True))
    expected_params, results = golden_batches_run(params, batches, steps)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), expected_params))
    assert [r.losses for r in replies] == [res.losses for res in results]
    assert endpoint.steps_done == 3 and dev.recoveries == 1  # each fault took the recovery path


def test_pipelined_steps_equal_stop_and_wait():
    params, _, _ = random_problem(CFG, 1, seed=5)
    batches = [random_problem(CFG, 64, seed=s)[1:] for s in range(4)]
    steps = make_steps(CFG, 64, 4, seed=1, directions=3)
    line = LoopbackTransport(DeviceEndpoint(GoldenDevice(CFG).execute, CFG))
    dev = Device(line, expect=CFG)
    dev.write_params(params)
    for i, sp in enumerate(steps):
        dev.train_step(sp, batch=batches[i], next_batch=batches[i + 1] if i + 1 < len(steps) else None,
                       loaded=i > 0)
    expected_params, _ = golden_batches_run(params, batches, steps)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), expected_params))
    assert dev.retried == 0


def test_bad_data_is_refused_before_anything_is_sent():
    from rfsnn.host.backends import make_backend
    from rfsnn.host.train import settings_for

    s = settings_for("mexican-hat", hidden=(4,), t_steps=4)
    backend = make_backend("golden", s.device_config(2), s, seed=0)
    line = backend.transport
    x, y = np.zeros((8, 2)), np.zeros(8)
    for bad_x, bad_y, message in [(np.where(np.eye(8, 2) > 0, np.nan, x), y, "input sample 0, column 0.*not a finite"),
                                  (x, np.full(8, np.inf), "target sample 0.*not a finite"),
                                  (np.full((8, 2), 2.5), y, "input .*outside the representable range")]:
        sent = line.bytes_sent
        with pytest.raises(ValueError, match=message):
            backend.attach(bad_x, bad_y)
        assert line.bytes_sent == sent
    dev = backend.device
    sent = line.bytes_sent
    with pytest.raises(ValueError, match=r"input sample/column 3/1: 40000 is outside the device's range"):
        dev.load_batch(np.where(np.arange(16).reshape(8, 2) == 7, 40000, 0), np.zeros((8, 1)))
    with pytest.raises(ValueError, match=r"layer 2 weight row/column 0/4: -32769 is outside"):
        dev.write_params([np.zeros((4, 3)), np.where(np.arange(5) == 4, -32769, 0)[None, :]])
    with pytest.raises(ValueError, match=r"a batch of 300 samples; the device holds 1..256"):
        dev.load_batch(np.zeros((300, 2)), np.zeros((300, 1)))
    with pytest.raises(ValueError, match=r"a training set of 4097 samples; the device holds 1..4096"):
        dev.upload_set(np.zeros((4097, 2)), np.zeros((4097, 1)))
    assert line.bytes_sent == sent


def _set_run(cfg, dev, params, samples, seed=7):
    """Weights and a training set of `samples` on `dev`."""
    _, x, t = random_problem(cfg, samples, seed=seed)
    dev.write_params(params)
    dev.upload_set(x, t)
    return x, t


@pytest.mark.parametrize("fault", ["drop-request", "corrupt-request", "garbage-before", "drop-reply",
                                   "corrupt-reply", "duplicate-reply"])
def test_runs_on_the_device_set_are_recovered_and_never_train_twice(fault):
    """A TRAIN_STEPS run whose frame or reply is lost is sent again: a run that did not happen runs
    now, one that did is answered "repeated" with its loss sum; the weights end as in a clean session,
    which are those of the golden model stepping through the contract's batch stream."""
    from rfsnn.sim.contract import streams

    params, _, _ = random_problem(CFG, 1, seed=3)
    sp = make_steps(CFG, 20, 1, seed=9, directions=2)[0]
    endpoint = DeviceEndpoint(GoldenDevice(CFG).execute, CFG)
    line = FaultyLine(endpoint, {})
    dev = Device(line, expect=CFG, timeout=0.01)
    x, t = _set_run(CFG, dev, params, 300)
    clean = Device(LoopbackTransport(DeviceEndpoint(GoldenDevice(CFG).execute, CFG)), expect=CFG)
    _set_run(CFG, clean, params, 300)
    sums = [dev.train_steps(sp, 20, 3, data_seed=5)]
    line.faults = {line.n: fault}
    sums.append(dev.train_steps(sp, 20, 4, data_seed=streams.state_after(5, 3, 20, CFG)))
    state = 5
    want = [clean.train_steps(sp, 20, 3, data_seed=state)]
    want.append(clean.train_steps(sp, 20, 4, data_seed=streams.state_after(state, 3, 20, CFG)))
    assert sums == want and endpoint.steps_done == 7
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), clean.read_params()))
    g, p, losses = GoldenModel(CFG), params, []
    for k in range(7):
        draw = streams.draw_step(state, 300, 20, CFG)
        step = dataclasses.replace(sp, seed=draw.seed, layer_start=streams.layer_start_after(sp.layer_start, k if k < 3 else k - 3, 2, CFG.n_layers))  # each run from sp's
        p, res = g.train_step(p, x[draw.indices], t[draw.indices], step)
        losses.append(base_loss(res.losses, sp.difference))
        state = draw.next_state
    assert sums == [sum(losses[:3]), sum(losses[3:])]
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), p))
    assert dev.retried == (0 if fault in ("garbage-before", "duplicate-reply") else 1)


def test_a_run_resent_out_of_turn_is_refused():
    """TRAIN_STEPS names its first step: a run the device is not at, or one resent after a TRAIN_STEP
    came between, is RANGE (the host and the device disagree on where training stands), and nothing runs."""
    params, _, _ = random_problem(CFG, 1, seed=3)
    sp = make_steps(CFG, 20, 1, seed=9, directions=2)[0]
    endpoint = DeviceEndpoint(GoldenDevice(CFG).execute, CFG)
    dev = Device(LoopbackTransport(endpoint), expect=CFG)
    _set_run(CFG, dev, params, 100)
    dev.train_steps(sp, 20, 2, data_seed=1)
    again = [P.train_steps(0, 2)]
    assert dev.request(again)[0][1] is True  # resent at once: repeated
    dev.train_step(sp)  # on the last drawn batch
    for requests in (again, [P.train_steps(9, 1)], [P.train_steps(3, 0)], [P.train_steps(3, 257)]):
        with pytest.raises(LinkError, match="TRAIN_STEPS.*RANGE"):
            dev.request(requests)
    assert endpoint.steps_done == 3
