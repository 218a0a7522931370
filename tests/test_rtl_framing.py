"""rtl.framing against the host's codec (rfsnn.sim.contract.protocol), in Amaranth's simulator.

The encoder must emit `frame(payload)` byte for byte; the decoder must give, frame by frame, the
verdicts of `Deframer` on any byte stream (good frames, damaged ones, garbage), and deliver exactly
the payload of each frame it accepts. Every stream is driven with random gaps and random back-pressure,
and every output is checked for the stream rules (valid holds, payload stable, until taken).
"""
import functools
import random

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.sim import Simulator
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rfsnn.sim.contract import protocol as P
from rfsnn.rtl.link import framing
from rfsnn.rtl.link.framing import FrameStatus, SLIPDecoder, SLIPEncoder

pytestmark = pytest.mark.xdist_group("framing")  # the cached harnesses serve one worker

SERIAL_CRC_CLOCKS = 9  # SerialCRC (serial_crc=True) takes a byte in nine clocks: the budgets allow that

END, ESC, ESC_END, ESC_ESC = P.END, P.ESC, P.ESC_END, P.ESC_ESC
STATUS = {P.LinkStatus.OK: FrameStatus.OK, P.LinkStatus.BAD_CRC: FrameStatus.BAD_CRC,
          P.LinkStatus.BAD_LENGTH: FrameStatus.BAD_LENGTH}


# ---- testbench plumbing --------------------------------------------------------------------------------
class Source:
    """Drives a stream from a list of items, with a gap (valid low) before an item with probability
    `gap`. Per clock: `feed` and `sample` before the edge, `advance` after it."""

    def __init__(self, port, items, rng, gap=0.0):
        self.stream, self.items, self.rng, self.gap = port, list(items), rng, gap
        self.i, self.offered, self.taken = 0, False, False
        self.shown = None  # what the stream shows now (a ctx.set costs a settle: set only changes)

    @property
    def done(self):
        return self.i == len(self.items)

    def feed(self, ctx):
        if not self.offered and not self.done:
            self.offered = self.rng.random() >= self.gap  # once offered, an item stays until taken
        show = (True, self.i) if self.offered else (False, None)
        if show != self.shown:
            ctx.set(self.stream.valid, self.offered)
            if self.offered:
                ctx.set(self.stream.payload, self.items[self.i])
            self.shown = show

    def sample(self, ctx):
        self.taken = self.offered and bool(ctx.get(self.stream.ready))

    def advance(self):
        if self.taken:
            self.i += 1
            self.offered = False


class Sink:
    """Takes a stream's items with probability `p_ready` per clock (`ready` does not look at `valid`),
    and checks that an item, once valid, stays valid and unchanged until it is taken."""

    def __init__(self, port, rng, p_ready=1.0, convert=int):
        self.stream, self.rng, self.p_ready, self.convert = port, rng, p_ready, convert
        self.held = None  # the item offered and not taken on the previous clock
        self.ready = None

    def feed(self, ctx):
        ready = self.rng.random() < self.p_ready
        if ready != self.ready:
            ctx.set(self.stream.ready, ready)
            self.ready = ready

    def sample(self, ctx):
        """The item transferred on this clock edge, or None."""
        valid = ctx.get(self.stream.valid)
        item = self.convert(ctx.get(self.stream.payload)) if valid else None
        if self.held is not None:
            assert valid and item == self.held, f"an offered item was withdrawn or changed: {self.held} -> {item}"
        if valid and self.ready:
            self.held = None
            return item
        self.held = item
        return None


class Harness:
    """A DUT and its simulator, compiled once and reset for each run (compiling costs more than most
    runs). `run(step, n)` calls `step(ctx)` once per clock, before the edge, until it returns True."""

    def __init__(self, dut):
        self.dut = dut
        self.sim = None

    async def _bench(self, ctx):
        try:
            for _ in range(self.max_cycles):
                if self.step(ctx):
                    return
                await ctx.tick()
            raise AssertionError(f"not finished after {self.max_cycles} clocks")
        except Exception as e:  # end the run cleanly, so that the simulator can be reset and reused
            self.failure = e

    def run(self, step, max_cycles):
        self.step, self.max_cycles, self.failure = step, max_cycles, None
        if self.sim is None:
            self.sim = Simulator(self.dut)
            self.sim.add_clock(1e-8)
            self.sim.add_testbench(self._bench)
        else:
            self.sim.reset()
        self.sim.run()
        if self.failure is not None:
            raise self.failure


@functools.cache
def harness(make, *args):
    return Harness(make(*args))


def verdict(v):
    return (int(v.length), v.status)


def payload_items(payloads):
    return [{"data": b, "last": int(i == len(p) - 1)} for p in payloads for i, b in enumerate(p)]


def run_encoder(payloads, seed, gap=0.3, p_ready=0.5, serial_crc=False):
    """The bytes the encoder emits for these payloads, back to back."""
    rng = random.Random(seed)
    h = harness(functools.partial(SLIPEncoder, serial_crc=serial_crc))
    dut = h.dut
    src = Source(dut.payload, payload_items(payloads), rng, gap)
    sink = Sink(dut.bytes, rng, p_ready)
    out = []
    tail = [8]  # clocks to watch after the last END: nothing more may come out

    def step(ctx):
        src.feed(ctx)
        sink.feed(ctx)
        src.sample(ctx)
        b = sink.sample(ctx)
        if b is not None:
            out.append(b)
        src.advance()
        if out.count(END) == 2 * len(payloads):
            tail[0] -= 1
        return tail[0] == 0

    h.run(step, 50 + (SERIAL_CRC_CLOCKS * serial_crc + 8) * sum(len(p) + 8 for p in payloads))
    return bytes(out)


def run_decoder(wire, seed, max_payload=P.MAX_PAYLOAD, gap=0.3, p_payload=0.7, p_frame=0.5, serial_crc=False):
    """Feed the decoder `wire`; return its verdicts as (length, status, the bytes delivered before it).
    Also returns the bytes delivered after the last verdict (a frame without its closing END)."""
    rng = random.Random(seed)
    h = harness(functools.partial(SLIPDecoder, serial_crc=serial_crc), max_payload)
    dut = h.dut
    src = Source(dut.bytes, wire, rng, gap)
    bytes_sink = Sink(dut.payload, rng, p_payload)
    frame_sink = Sink(dut.frame, rng, p_frame, convert=verdict)
    verdicts, pending = [], bytearray()
    idle = [0]

    def step(ctx):
        src.feed(ctx)
        bytes_sink.feed(ctx)
        frame_sink.feed(ctx)
        src.sample(ctx)
        assert not (ctx.get(dut.payload.valid) and ctx.get(dut.frame.valid)), "a byte and a verdict at once"
        b, v = bytes_sink.sample(ctx), frame_sink.sample(ctx)
        if b is not None:
            pending.append(b)
        if v is not None:
            verdicts.append((*v, bytes(pending)))
            pending.clear()
        src.advance()
        busy = ctx.get(dut.payload.valid) or ctx.get(dut.frame.valid)
        idle[0] = idle[0] + 1 if src.done and not busy else 0
        return idle[0] > 4

    h.run(step, 100 + (SERIAL_CRC_CLOCKS * serial_crc + 12) * len(wire))
    return verdicts, bytes(pending)


def check_against_deframer(wire, seed, max_payload=P.MAX_PAYLOAD, **kw):
    expected = P.Deframer(max_payload).feed(wire)
    got, _ = run_decoder(wire, seed, max_payload, **kw)
    for length, status, delivered in got:
        assert length == len(delivered), "a verdict's length is not the number of bytes delivered"
    assert [(STATUS[r.status], r.payload) for r in expected] == \
           [(status, delivered if status == FrameStatus.OK else None) for _, status, delivered in got], \
        [(r.status.name, r.reason) for r in expected]
    return got


# ---- strategies ----------------------------------------------------------------------------------------
def payloads(max_size=P.MAX_PAYLOAD):
    """Random bytes, and bytes drawn mostly from the SLIP specials."""
    special = st.sampled_from([END, ESC, ESC_END, ESC_ESC, 0x00, 0xFF])
    return st.one_of(st.binary(min_size=1, max_size=max_size),
                     st.lists(st.one_of(special, special, st.integers(0, 255)), min_size=1, max_size=max_size)
                     .map(bytes))


def test_constants_match_the_host_codec():
    assert (framing.END, framing.ESC, framing.ESC_END, framing.ESC_ESC) == (END, ESC, ESC_END, ESC_ESC)
    assert (framing.CRC_BYTES, framing.MAX_PAYLOAD) == (P.CRC_BYTES, P.MAX_PAYLOAD)
    for link, status in STATUS.items():
        assert link.value == status.value  # the verdict can go into a reply's STATUS byte as it is


# ---- encoder -------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.lists(payloads(), min_size=1, max_size=2), st.integers(0, 2**32 - 1))
@example([bytes([END]) * 255], 1)
@example([bytes([ESC]) * 255], 2)
@example([b"\x00", bytes([END]), bytes([ESC]), bytes(range(255))], 3)
def test_encoder_emits_host_frames(payloads_, seed):
    assert run_encoder(payloads_, seed) == b"".join(P.frame(p) for p in payloads_)


def test_encoder_at_full_rate():
    """No gaps, no back-pressure: one wire byte per clock, and still exact."""
    ps = [bytes([END, 1, ESC, 2]), bytes(range(200, 255))]
    assert run_encoder(ps, 0, gap=0.0, p_ready=1.0) == b"".join(P.frame(p) for p in ps)


# ---- decoder on good frames ----------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.lists(payloads(), min_size=1, max_size=2), st.integers(0, 2**32 - 1))
@example([bytes([END]) * 255], 1)
@example([bytes([ESC]) * 255, b"\x00"], 2)
def test_decoder_delivers_host_frames(payloads_, seed):
    wire = b"".join(P.frame(p) for p in payloads_)
    got, rest = run_decoder(wire, seed)
    assert got == [(len(p), FrameStatus.OK, p) for p in payloads_] and rest == b""


def test_decoder_at_full_rate():
    ps = [bytes([END, 1, ESC, 2]), bytes(range(255))]
    got, _ = run_decoder(b"".join(P.frame(p) for p in ps), 0, gap=0.0, p_payload=1.0, p_frame=1.0)
    assert got == [(len(p), FrameStatus.OK, p) for p in ps]


def test_decoder_waits_for_a_slow_consumer():
    """Short frames back to back, input never idle, outputs taken rarely: nothing lost or reordered."""
    ps = [bytes([i]) for i in range(12)] + [bytes([END, ESC]) * 3, b"\x01\x02"]
    wire = b"".join(P.frame(p) for p in ps) + bytes([END, 1, 2, END, ESC, 9, END, END])
    got = check_against_deframer(wire, 5, gap=0.0, p_payload=0.1, p_frame=0.05)
    assert [d for _, s, d in got if s == FrameStatus.OK] == ps


# ---- decoder on what the Deframer refuses -------------------------------------------------------------
SMALL = 16  # max_payload for the fault tests: oversized frames stay cheap to simulate


def faulty_streams(max_payload):
    """Concatenations of good frames, damaged frames and garbage."""
    short = payloads(max_size=max_payload)
    good = short.map(P.frame)

    @st.composite
    def flipped(draw):  # any byte of a frame (its ENDs too) xor'ed with something
        wire = bytearray(P.frame(draw(short)))
        for _ in range(draw(st.integers(1, 2))):
            wire[draw(st.integers(0, len(wire) - 1))] ^= draw(st.integers(1, 255))
        return bytes(wire)

    @st.composite
    def truncated(draw):  # a frame cut short (the next segment's END ends it)
        wire = P.frame(draw(short))
        return wire[:draw(st.integers(1, len(wire) - 1))]

    @st.composite
    def bad_escape(draw):  # ESC followed by a byte that is neither ESC_END nor ESC_ESC (nor END)
        bad = draw(st.integers(0, 255).filter(lambda b: b not in (ESC_END, ESC_ESC, END)))
        return bytes([END]) + P.stuff(draw(st.binary(max_size=8))) + bytes([ESC, bad]) \
            + P.stuff(draw(st.binary(max_size=8))) + bytes([END])

    @st.composite
    def ends_in_escape(draw):
        return bytes([END]) + P.stuff(draw(st.binary(max_size=8))) + bytes([ESC, END])

    @st.composite
    def wrong_length(draw):  # too short for a CRC, or longer than max_payload (with a correct CRC)
        body = draw(st.one_of(st.binary(min_size=1, max_size=P.CRC_BYTES),
                              st.builds(lambda p: p + P.crc32(p).to_bytes(4, "little"),
                                        st.binary(min_size=max_payload + 1, max_size=max_payload + 6))))
        return bytes([END]) + P.stuff(body) + bytes([END])

    @st.composite
    def long_with_escape(draw):  # the limit reached at an escape, or a bad escape after the limit
        body = draw(st.binary(min_size=max_payload + 3, max_size=max_payload + 5))
        tail = draw(st.sampled_from([bytes([ESC, ESC_END]), bytes([ESC, 0x01]), bytes([ESC]), b""]))
        return bytes([END]) + P.stuff(body) + tail + bytes([END])

    garbage = st.binary(max_size=6)
    ends = st.integers(1, 3).map(lambda n: bytes([END]) * n)
    lone_esc = st.just(bytes([END, ESC, END]))
    segment = st.one_of(good, flipped(), truncated(), bad_escape(), ends_in_escape(), wrong_length(),
                        long_with_escape(), garbage, ends, lone_esc)
    return st.lists(segment, min_size=1, max_size=6).map(b"".join)


@pytest.mark.slow  # 200 streams through the simulated decoder: about 25 s
@settings(max_examples=200, deadline=None)
@given(faulty_streams(SMALL), st.integers(0, 2**32 - 1))
def test_decoder_verdicts_equal_deframer(wire, seed):
    check_against_deframer(wire, seed, SMALL)


@pytest.mark.parametrize("name,wire,statuses", [
    ("END END", bytes([END, END, END]), []),
    ("lone ESC", bytes([END, ESC, END]), [FrameStatus.BAD_CRC]),
    ("4 bytes", bytes([END, 1, 2, 3, 4, END]), [FrameStatus.BAD_LENGTH]),
    ("ESC + bad byte", bytes([END, 1, ESC, 0x55, 2, 3, 4, 5, END]), [FrameStatus.BAD_CRC]),
    ("ends inside an escape", bytes([END]) + P.frame(b"abc")[1:-1] + bytes([ESC, END]), [FrameStatus.BAD_CRC]),
    ("garbage, then a frame", b"xyz" + P.frame(b"hello"), [FrameStatus.BAD_LENGTH, FrameStatus.OK]),
    ("no leading END", P.frame(b"hello")[1:], [FrameStatus.OK]),
    ("truncated, then a frame", P.frame(b"hello world")[:7] + P.frame(b"hi"), [FrameStatus.BAD_CRC, FrameStatus.OK]),
    ("255 bytes", P.frame(bytes(255)), [FrameStatus.OK]),
    ("256 bytes", bytes([END]) + P.stuff(bytes(256) + P.crc32(bytes(256)).to_bytes(4, "little")) + bytes([END]),
     [FrameStatus.BAD_LENGTH]),
    ("300 bytes, then a frame", bytes([END]) + bytes(range(1, 151)) * 2 + P.frame(b"ok"),
     [FrameStatus.BAD_LENGTH, FrameStatus.OK]),
    ("bad escape past the limit", bytes([END]) + bytes(300) + bytes([ESC, 1]) + bytes(3) + P.frame(b"ok"),
     [FrameStatus.BAD_CRC, FrameStatus.OK]),
    ("limit reached at an escape", bytes([END]) + bytes(259) + bytes([ESC, ESC_ESC, END]), [FrameStatus.BAD_LENGTH]),
])
def test_decoder_cases_at_max_payload(name, wire, statuses):
    got = check_against_deframer(wire, 7)
    assert [s for _, s, _ in got] == statuses


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=P.MAX_PAYLOAD), st.data())
def test_decoder_refuses_bit_flips_like_deframer(payload, data):
    wire = bytearray(P.frame(payload))
    wire[data.draw(st.integers(0, len(wire) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    check_against_deframer(bytes(wire) + P.frame(b"next"), data.draw(st.integers(0, 2**32 - 1)))


# ---- round trip ----------------------------------------------------------------------------------------
class Loopback(wiring.Component):
    def __init__(self, serial_crc=False):
        self.enc, self.dec = SLIPEncoder(serial_crc), SLIPDecoder(serial_crc=serial_crc)
        super().__init__({"payload": wiring.In(stream.Signature(framing.PAYLOAD_BYTE)),
                          "out": wiring.Out(stream.Signature(8)),
                          "frame": wiring.Out(stream.Signature(framing.verdict_layout()))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.enc, m.submodules.dec = self.enc, self.dec
        wiring.connect(m, self.enc.bytes, self.dec.bytes)
        wiring.connect(m, wiring.flipped(self.payload), self.enc.payload)
        wiring.connect(m, self.dec.payload, wiring.flipped(self.out))
        wiring.connect(m, self.dec.frame, wiring.flipped(self.frame))
        return m


@settings(max_examples=25, deadline=None)
@given(st.lists(payloads(), min_size=1, max_size=3), st.integers(0, 2**32 - 1), st.booleans())
def test_round_trip(payloads_, seed, serial_crc):
    rng = random.Random(seed)
    h = harness(Loopback, serial_crc)
    dut = h.dut
    src = Source(dut.payload, payload_items(payloads_), rng, gap=0.2)
    out, frames = Sink(dut.out, rng, 0.8), Sink(dut.frame, rng, 0.8, convert=verdict)
    got, pending = [], bytearray()

    def step(ctx):
        for s in (src, out, frames):
            s.feed(ctx)
        src.sample(ctx)
        b, v = out.sample(ctx), frames.sample(ctx)
        if b is not None:
            pending.append(b)
        if v is not None:
            got.append((*v, bytes(pending)))
            pending.clear()
        src.advance()
        return len(got) == len(payloads_)

    h.run(step, 100 + (SERIAL_CRC_CLOCKS * serial_crc + 10) * sum(len(p) + 10 for p in payloads_))
    assert got == [(len(p), FrameStatus.OK, p) for p in payloads_]


# ---- the bit-serial CRC (serial_crc=True, the iCEBreaker's build) ---------------------------------------
def test_serial_crc_steps_like_zlib():
    import zlib

    reg = framing.CRC.initial_crc
    for b in b"rfsnn framing":
        reg = framing.SerialCRC.step(reg, b)
    assert reg ^ framing.CRC.xor_output == zlib.crc32(b"rfsnn framing")


@settings(max_examples=20, deadline=None)
@given(st.lists(payloads(), min_size=1, max_size=2), st.integers(0, 2**32 - 1))
def test_serial_crc_encoder_emits_host_frames(payloads_, seed):
    assert run_encoder(payloads_, seed, serial_crc=True) == b"".join(P.frame(p) for p in payloads_)


@settings(max_examples=60, deadline=None)
@given(faulty_streams(SMALL), st.integers(0, 2**32 - 1))
def test_serial_crc_decoder_verdicts_equal_deframer(wire, seed):
    check_against_deframer(wire, seed, SMALL, serial_crc=True)
