"""The host link over a real pseudo-terminal and pyserial, when the far end misbehaves: the port
vanishes, another program reads it, the device fails, or a client goes away without reading."""
import os
import threading
import time

import numpy as np
import pytest

from rfsnn.sim.contract import protocol as P
from rfsnn.host.link import Device, LinkError, SerialTransport
from rfsnn.sim.endpoint import DeviceEndpoint
from rfsnn.sim.ptyserve import PtyServer
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden_device import GoldenDevice
from rfsnn.host.backends import random_problem

CFG = DeviceConfig(layers=(2, 6, 5, 2), t_steps=8, max_batch=64, max_directions=8)
TIMEOUT = 0.2


@pytest.fixture
def server():
    gd = GoldenDevice(CFG)
    s = PtyServer(DeviceEndpoint(gd.execute, CFG, bulk=gd)).start()
    yield s
    s.close()


def wait_until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_port_that_vanishes_is_a_link_error_naming_it(server):
    line = SerialTransport(server.path)
    dev = Device(line, expect=CFG, timeout=TIMEOUT)
    server.close()  # the board is unplugged: the terminal's master end is gone
    for call in (dev.infer, lambda: line.write(b"\xc0"), lambda: line.read(0.01)):
        with pytest.raises(LinkError, match=rf"^serial port {server.path}: (sending|receiving) failed \(") as e:
            call()
        assert "\n" not in str(e.value)
    line.close()  # closing a dead port is not another error
    with pytest.raises(LinkError, match=rf"cannot open serial port {server.path}"):
        SerialTransport(server.path)


def test_a_port_that_vanishes_mid_run_ends_training_with_a_link_error_and_the_checkpoint(tmp_path):
    """rfsnn train --backend serial: the board goes away after some steps. The run ends in LinkError
    (which the CLI prints as one line), saying where the last weights are, not in a traceback."""
    from rfsnn.host.backends import LinkOptions
    from rfsnn.host.train import settings_for, train

    s = settings_for("poisson1d", steps=40, eval_every=5, hidden=(6,), t_steps=4, n_train=128, batch=16,
                     directions=2, backend="serial")
    cfg = s.device_config(1)
    gd = GoldenDevice(cfg)
    endpoint = DeviceEndpoint(gd.execute, cfg, bulk=gd)
    server = PtyServer(endpoint).start()
    unplug = threading.Thread(target=lambda: (wait_until(lambda: endpoint.steps_done >= 12, 60), server.close()),
                              daemon=True)
    unplug.start()
    try:
        with pytest.raises(LinkError, match=r"serial port .* failed .*step \d+.*checkpoint\.npz") as e:
            train(s, tmp_path, progress=False, link=LinkOptions(port=server.path, timeout=TIMEOUT))
    finally:
        unplug.join()
        server.close()
    assert "\n" not in str(e.value)
    with np.load(tmp_path / "checkpoint.npz") as c:
        assert "W1" in c.files


def test_another_program_reading_the_port_gives_right_answers_or_a_link_error(server):
    params, _, _ = random_problem(CFG, 1, seed=3)
    dev = Device(SerialTransport(server.path), expect=CFG, timeout=TIMEOUT, retries=2)
    dev.write_params(params)
    thief = SerialTransport(server.path)  # takes replies off the terminal before the host sees them
    stop = threading.Event()

    def steal():
        while not stop.is_set():
            try:
                thief.read(0.01)
            except LinkError:
                pass

    t = threading.Thread(target=steal, daemon=True)
    t.start()
    failures = 0
    try:
        for _ in range(3):
            try:
                assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))
            except LinkError:  # anything else (a SerialException, a wrong weight) fails the test
                failures += 1
    finally:
        stop.set()
        t.join()
        thief.close()
    assert failures + dev.retried > 0  # the other program did get in the way


def test_the_server_refuses_an_overlong_reply_and_keeps_serving(server):
    """A valid frame whose reply would exceed MAX_PAYLOAD: BAD_LENGTH, DONE 0 and nothing runs."""
    line = SerialTransport(server.path)
    dev = Device(line, expect=CFG, timeout=TIMEOUT)
    params, _, _ = random_problem(CFG, 1, seed=2)
    dev.write_params(params)
    requests = [P.param_seek(0), P.param_write([7] * 6), P.param_read(127)]  # 3 + 254 bytes of reply
    line.write(P.frame(bytes([9]) + b"".join(r.encode(dev.vb) for r in requests)))
    got = []
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        got = dev.deframer.feed(line.read(TIMEOUT))
    assert [P.decode_reply(r.payload) for r in got] == [P.Reply(9, P.LinkStatus.BAD_LENGTH, 0, b"")]
    assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))  # the write did not run
    assert server.failures == 0


class FailingOnce:
    """An endpoint that raises on its first bytes (a device model with a bug), then works."""

    def __init__(self, endpoint):
        self.endpoint, self.failed = endpoint, False

    def receive(self, data):
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the device model")
        return self.endpoint.receive(data)


def test_the_server_survives_an_endpoint_failure(caplog):
    gd = GoldenDevice(CFG)
    server = PtyServer(FailingOnce(DeviceEndpoint(gd.execute, CFG, bulk=gd))).start()
    try:
        dev = Device(SerialTransport(server.path), expect=CFG, timeout=TIMEOUT)  # its first frame is lost
        assert dev.retried == 1 and server.failures == 1
        assert dev.infer() == 0
        assert "a bug in the device model" in caplog.text
    finally:
        server.close()


def test_the_server_survives_a_client_that_goes_away_without_reading(server):
    """The first client sends half a frame and many frames whose replies (more than the terminal
    buffers) it never reads, and closes the port; the server neither stalls nor dies, and the next
    client gets its own replies."""
    params, _, _ = random_problem(CFG, 1, seed=4)
    first = Device(SerialTransport(server.path), expect=CFG, timeout=TIMEOUT)
    first.write_params(params)
    reads = [P.frame(P.encode_request_payload(q % 255, [P.param_seek(0), P.param_read(60)], 2)) for q in range(400)]
    wire = b"".join(reads) + reads[0][:8]  # 400 replies of 130 bytes: 52 kB, and half a frame at the end
    ref = GoldenDevice(CFG)
    ref.params = [p.copy() for p in params]
    replies = len(DeviceEndpoint(ref.execute, CFG, bulk=ref).receive(wire))
    out, lost = server.bytes_out, server.bytes_lost
    first.t.write(wire)
    first.t.close()
    wait_until(lambda: server.bytes_out - out + server.bytes_lost - lost == replies)  # the server is not stuck
    assert server.bytes_lost > lost  # what the terminal could not hold was dropped, as on a cable
    for _ in range(2):  # and a client may come and go again
        dev = Device(SerialTransport(server.path), expect=CFG, timeout=TIMEOUT)
        assert all(np.array_equal(a, b) for a, b in zip(dev.read_params(), params))
        dev.t.close()
    assert server._thread.is_alive()


def test_closing_the_server_stops_its_thread_before_the_descriptors_go():
    gd = GoldenDevice(CFG)
    server = PtyServer(DeviceEndpoint(gd.execute, CFG, bulk=gd)).start()
    thread = server._thread
    server.close()
    assert not thread.is_alive()
    with pytest.raises(OSError):
        os.fstat(server.master)
    server.close()  # twice is harmless
