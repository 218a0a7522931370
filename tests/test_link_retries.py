"""The host's Device when the line or the device misbehaves for a while: resends spread over the
timeout, replies that do not fit their frame, devices that never stop sending, and the wrap of the
16-bit step number. Every failure is a LinkError, and every wait ends."""
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfsnn.sim.contract import protocol as P
from rfsnn.host.link import DRAIN_TIMEOUTS, Device, LinkError, LoopbackTransport
from rfsnn.sim.endpoint import DeviceEndpoint
from rfsnn.sim.ptyserve import PtyServer
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden_device import GoldenDevice
from rfsnn.host.backends import random_problem
from rfsnn.sim.learner_sim import make_steps

CFG = DeviceConfig(layers=(2, 6, 5, 2), t_steps=8, max_batch=64, max_directions=8)


def golden_endpoint():
    gd = GoldenDevice(CFG)
    return DeviceEndpoint(gd.execute, CFG, bulk=gd)


# ---- resends spread over the timeout ---------------------------------------------------------------------
class Disturbance:
    """Wraps a transport: for `seconds` (wall time) after start(), every byte each way is garbled
    (the device and the host see damaged frames at once) or dropped (nothing arrives)."""

    def __init__(self, inner, how):
        self.inner, self.how, self.until = inner, how, 0.0

    def start(self, seconds):
        self.until = time.monotonic() + seconds

    def _spoil(self, data):
        if time.monotonic() >= self.until:
            return data
        return b"" if self.how == "drop" else bytes(b ^ 0x5A if b != P.END else b for b in data)

    def write(self, data):
        data = self._spoil(data)
        if data:
            self.inner.write(data)

    def read(self, timeout):
        return self._spoil(self.inner.read(timeout))


def test_resends_double_and_the_last_goes_out_a_timeout_after_the_first_failure():
    dev = Device(LoopbackTransport(golden_endpoint()), timeout=1.4, retries=3)
    assert [dev.resend_delay(k) for k in (1, 2, 3)] == pytest.approx([0.2, 0.6, 1.4])


@pytest.mark.parametrize("how", ["garble", "drop"])
@pytest.mark.parametrize("fraction", [0.1, 0.6])
def test_a_disturbance_shorter_than_the_timeout_does_not_end_a_run(how, fraction):
    """Over a real pseudo-terminal: a burst of noise lasting a fraction of the timeout, as the frame goes
    out. Resent at once, all tries would have met the noise."""
    timeout = 0.5
    server = PtyServer(golden_endpoint()).start()
    try:
        from rfsnn.host.link import SerialTransport

        line = Disturbance(SerialTransport(server.path), how)
        dev = Device(line, expect=CFG, timeout=timeout, retries=3)
        line.start(fraction * timeout)
        assert dev.request([P.step_count()]) == [0]
        assert dev.retried >= 1
    finally:
        server.close()


def test_a_disturbance_that_does_not_end_ends_in_a_link_error_in_bounded_time():
    timeout = 0.05
    line = Disturbance(LoopbackTransport(golden_endpoint()), "garble")
    dev = Device(line, expect=CFG, timeout=timeout, retries=3)
    line.start(1e9)
    start = time.monotonic()
    with pytest.raises(LinkError, match=r"STEP_COUNT: no valid reply after 4 tries .*last: a damaged reply"):
        dev.request([P.step_count()])
    assert timeout <= time.monotonic() - start < 4 * timeout  # spread over the timeout, and no longer than that


# ---- replies that do not fit their frame ---------------------------------------------------------------
class Liar(LoopbackTransport):
    """Loopback whose next `times` replies are rewritten by `lie(payload) -> payload` (CRC made valid)."""

    def __init__(self, endpoint):
        super().__init__(endpoint)
        self.lie, self.times = None, 0

    def write(self, data):
        before = len(self._rx)
        super().write(data)
        if self.times and len(self._rx) > before:
            self.times -= 1
            out = bytearray()
            for r in P.Deframer().feed(bytes(self._rx[before:])):
                out += P.frame(self.lie(r.payload))
            self._rx[before:] = out


LIES = {
    "DONE short, STATUS OK": lambda p: p[:2] + bytes([p[2] - 1]) + p[3:],
    "DONE 0, STATUS OK, no data": lambda p: p[:2] + b"\x00",
    "DONE beyond the frame": lambda p: p[:2] + bytes([p[2] + 1]) + p[3:],
    "one data byte short": lambda p: p[:-1],
    "one data byte too many": lambda p: p + b"\x00",
    "a refusal with DONE = all": lambda p: p[:1] + bytes([P.LinkStatus.RANGE]) + p[2:],
    "SEQ of another frame": lambda p: bytes([(p[0] + 100) % 255]) + p[1:],
    "SEQ 0xFF with STATUS OK": lambda p: b"\xff" + p[1:],
    "an unknown STATUS": lambda p: p[:1] + b"\x09" + p[2:],
    "only SEQ": lambda p: p[:1],
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_reply_that_does_not_fit_its_frame_is_retried(lie):
    line = Liar(golden_endpoint())
    dev = Device(line, expect=CFG, timeout=0.01)
    params, _, _ = random_problem(CFG, 1, seed=7)
    dev.write_params(params)
    line.lie, line.times = LIES[lie], 1
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))
    assert dev.retried == 1


@pytest.mark.parametrize("lie", list(LIES))
def test_a_device_that_always_lies_gives_a_link_error(lie):
    line = Liar(golden_endpoint())
    dev = Device(line, expect=CFG, timeout=0.01, retries=2)
    line.lie, line.times = LIES[lie], 10**6
    with pytest.raises(LinkError, match=r"INFER: no valid reply after 3 tries"):
        dev.infer()


def reply_bodies():
    """What may follow SEQ in a reply: a plausible header (STATUS, DONE) and data of any length, or any bytes."""
    header = st.tuples(st.integers(0, 6), st.integers(0, 4)).map(bytes)
    return st.one_of(st.tuples(header, st.binary(max_size=40)).map(b"".join), st.binary(max_size=12))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply_bodies(), st.sampled_from([[P.infer()], [P.step_count(), P.param_read(3)],
                                                 [P.train_step(0)], [P.info(0), P.read_step(1)]]))
def test_any_reply_with_a_valid_crc_gives_a_result_or_a_link_error(payload, requests):
    """Whatever the device sends back (here: its SEQ and then anything), the host decodes it as the
    requests' data or raises LinkError: never an IndexError or a struct error."""
    line = Liar(golden_endpoint())
    dev = Device(line, expect=CFG, timeout=0.001, retries=1)
    line.lie, line.times = (lambda p: p[:1] + payload), 10**6
    try:
        got = dev.request(requests)
    except LinkError:
        return
    assert len(got) == len(requests)


# ---- every wait ends -----------------------------------------------------------------------------------
class Chatterbox(LoopbackTransport):
    """After `start()`, the device answers nothing and sends valid-CRC replies to other frames (stale
    SEQs) without pause, for `seconds`; `garbage`: damaged frames instead."""

    def __init__(self, endpoint, garbage=False):
        super().__init__(endpoint)
        self.garbage, self.until = garbage, 0.0

    def start(self, seconds):
        self.until = time.monotonic() + seconds

    def write(self, data):
        if time.monotonic() >= self.until:
            super().write(data)

    def read(self, timeout):
        if time.monotonic() >= self.until:
            return super().read(timeout)
        time.sleep(0.001)
        if self.garbage:
            return b"\xc0\x13\x37\x00\x00\x00\x00\xc0"
        return P.frame(P.encode_reply(254, P.LinkStatus.OK, 0, b""))  # never a SEQ the host is waiting for


@pytest.mark.parametrize("garbage", [False, True])
def test_a_device_that_never_stops_sending_does_not_hold_the_host(garbage):
    """A pipelined exchange loses a reply, so the host drains the line before it resends; the device
    keeps sending for far longer than the drain's bound. The host must give up on waiting in time."""
    timeout = 0.05
    line = Chatterbox(golden_endpoint(), garbage)
    dev = Device(line, expect=CFG, timeout=timeout, retries=3)
    params, _, _ = random_problem(CFG, 1, seed=1)
    line.start(10)
    start = time.monotonic()
    with pytest.raises(LinkError):
        dev.write_params(params)  # two frames, pipelined
    # the first wait, a drain, three more waits, the resend delays, and slack for a loaded machine
    bound = (1 + DRAIN_TIMEOUTS + 3 + 1) * timeout + 0.5
    assert time.monotonic() - start < bound


def test_a_device_that_stops_chattering_within_the_timeouts_is_recovered():
    timeout = 0.05
    line = Chatterbox(golden_endpoint())
    dev = Device(line, expect=CFG, timeout=timeout, retries=3)
    params, _, _ = random_problem(CFG, 1, seed=1)
    line.start(0.5 * timeout)
    dev.write_params(params)
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))


# ---- the 16-bit step number ----------------------------------------------------------------------------
class DropReply(LoopbackTransport):
    def __init__(self, endpoint):
        super().__init__(endpoint)
        self.drop_next = False

    def write(self, data):
        super().write(data)
        if self.drop_next:
            self.drop_next = False
            self._rx.clear()


def test_training_through_the_wrap_of_the_step_number_with_a_lost_reply():
    """The device has done 65534 steps (mod 2**16); the replies to steps 65535 and 0, either side of the
    wrap, are lost: each resend is answered "repeated", and the weights are as if nothing happened."""
    params, x, t = random_problem(CFG, 20, seed=3)
    steps = make_steps(CFG, 20, 4, seed=9, directions=2)
    ref = Device(LoopbackTransport(golden_endpoint()), expect=CFG)
    endpoint = golden_endpoint()
    endpoint.steps_done = 0xFFFE
    line = DropReply(endpoint)
    dev = Device(line, expect=CFG, timeout=0.01)
    assert dev.steps_done == 0xFFFE
    for d in (ref, dev):
        d.write_params(params)
        d.load_batch(x, t)
    replies = []
    for n, sp in enumerate(steps):
        line.drop_next = n in (1, 2)  # the replies of step 65535 (the last before the wrap) and step 0
        replies.append(dev.train_step(sp))
        assert ref.train_step(sp).losses == replies[-1].losses
    assert dev.steps_done == endpoint.steps_done == 2 and dev.retried == 2
    assert [r.repeated for r in replies] == [False, True, True, False]
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), ref.read_params()))
