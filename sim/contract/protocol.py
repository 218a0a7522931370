"""The host link protocol (docs/protocol.md) as a sans-IO codec: bytes in, messages out, no I/O.

- framing: `frame(payload)` -> wire bytes (SLIP, CRC-32); `Deframer.feed(bytes)` -> checked payloads
  or the reason a frame was refused;
- requests: `REQUESTS` (what each code carries and returns), `Request` values (built by the helpers
  below), `encode_request_payload`, and on the device side `parse_requests`; replies: `encode_reply`,
  `decode_reply`, `Request.decode_data`.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from .commands import Op

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
MAX_PAYLOAD = 255
RX_WINDOW = 512  # bytes of frames a device buffers while it works: a host keeps at most this many in flight
CRC_BYTES = 4
REFUSED_SEQ = 0xFF  # the SEQ of a reply to a frame that could not be read; hosts number frames 0..254


class Code(IntEnum):
    NOP = 0x00
    INFO = 0x01
    SET = 0x02
    PARAM_SEEK = 0x03
    PARAM_WRITE = 0x04
    PARAM_READ = 0x05
    SAMPLE_SEEK = 0x06
    SAMPLE_WRITE = 0x07
    OUTPUT_READ = 0x08
    INFER = 0x09
    TRAIN_STEP = 0x0A
    READ_LOSS = 0x0B
    READ_STEP = 0x0C
    READ_COUNTER = 0x0D
    CLEAR_COUNTERS = 0x0E
    STEP_COUNT = 0x0F
    DATA_SEEK = 0x10
    DATA_WRITE = 0x11
    TRAIN_STEPS = 0x12


class LinkStatus(IntEnum):
    OK = 0
    RANGE = 1
    UNKNOWN = 2
    BAD_CRC = 3
    BAD_LENGTH = 4
    BUSY = 5  # reserved (docs/protocol.md): no device sends it; frames wait in the receive FIFO


VALUES = "values"  # a request that carries a count byte, then count values of VB bytes each


@dataclass(frozen=True)
class RequestSpec:
    """What a request code carries and returns: the one table the host codec, the software device and
    the gateware dispatcher (rtl/link/dispatcher.py) all build from."""
    args: tuple[tuple[str, int], ...] | str  # (name, bytes) of each unsigned little-endian argument, or VALUES
    reply_bytes: int | None  # bytes of reply data; None: count x VB (the reads of values)
    op: Op | None = None  # the one learner command a simple request becomes (None: the device decides)

    @property
    def arg_bytes(self) -> int | None:
        """Fixed argument bytes after the code; None for a VALUES request."""
        return None if self.args == VALUES else sum(n for _, n in self.args)


REQUESTS = {
    Code.NOP: RequestSpec((), 0),
    Code.INFO: RequestSpec((("field", 1),), 4, Op.INFO),
    Code.SET: RequestSpec((("register", 1), ("value", 4)), 0, Op.SET),
    Code.PARAM_SEEK: RequestSpec((("layer", 1), ("row", 2), ("col", 2)), 0),
    Code.PARAM_WRITE: RequestSpec(VALUES, 0),
    Code.PARAM_READ: RequestSpec((("count", 1),), None),
    Code.SAMPLE_SEEK: RequestSpec((("sample", 2),), 0, Op.SAMPLE_SEEK),
    Code.SAMPLE_WRITE: RequestSpec(VALUES, 0),
    Code.OUTPUT_READ: RequestSpec((("count", 1),), None),
    Code.INFER: RequestSpec((), 8, Op.INFER),
    Code.TRAIN_STEP: RequestSpec((("step", 2),), 2),
    Code.READ_LOSS: RequestSpec((("index", 1),), 8, Op.READ_LOSS),
    Code.READ_STEP: RequestSpec((("index", 1),), 4, Op.READ_STEP),
    Code.READ_COUNTER: RequestSpec((("index", 1),), 8, Op.READ_COUNTER),
    Code.CLEAR_COUNTERS: RequestSpec((), 0, Op.CLEAR_COUNTERS),
    Code.STEP_COUNT: RequestSpec((), 2),
    Code.DATA_SEEK: RequestSpec((("sample", 2),), 0, Op.DATA_SEEK),
    Code.DATA_WRITE: RequestSpec(VALUES, 0),
    Code.TRAIN_STEPS: RequestSpec((("step", 2), ("count", 2)), 9),  # loss sum u64, repeated u8
}


def value_bytes(cfg) -> int:
    """VB: bytes per weight, input, target or output value on the link."""
    return math.ceil(max(cfg.w_bits, cfg.x_bits, cfg.y_bits) / 8)


def encode_values(values, vb: int) -> bytes:
    """Signed little-endian values of vb bytes each (range-checked: a value that does not fit is an error)."""
    if vb in (1, 2, 4, 8):
        a = np.asarray(values, np.int64)
        lo, hi = -(1 << (8 * vb - 1)), (1 << (8 * vb - 1)) - 1
        if len(a) and (a.min() < lo or a.max() > hi):
            raise OverflowError(f"a value outside {vb}-byte signed range [{lo}, {hi}]")
        return a.astype(f"<i{vb}").tobytes()
    return b"".join(int(v).to_bytes(vb, "little", signed=True) for v in values)


def decode_values(data: bytes, vb: int) -> list[int]:
    if vb in (1, 2, 4, 8):
        return np.frombuffer(data, f"<i{vb}").astype(np.int64).tolist()
    return [int.from_bytes(data[i:i + vb], "little", signed=True) for i in range(0, len(data), vb)]


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# ---- framing ---------------------------------------------------------------------------------------
def stuff(body: bytes) -> bytes:
    return body.replace(bytes([ESC]), bytes([ESC, ESC_ESC])).replace(bytes([END]), bytes([ESC, ESC_END]))


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes; a frame holds at most {MAX_PAYLOAD}")
    body = payload + crc32(payload).to_bytes(CRC_BYTES, "little")
    return bytes([END]) + stuff(body) + bytes([END])


@dataclass
class Received:
    """One frame off the wire: its payload, or why it was refused (status BAD_CRC or BAD_LENGTH)."""
    payload: bytes | None
    status: LinkStatus = LinkStatus.OK
    reason: str = ""


class Deframer:
    """Feed it bytes as they arrive; it returns each completed frame. Resynchronises at every END.

    A frame too long to be valid is not kept whole: past 2 x limit stuffed bytes (more than any valid
    frame needs) the rest is only scanned for bad escapes, so memory stays bounded and the verdict
    does not depend on how the bytes were split between calls: a bad escape anywhere gives BAD_CRC,
    otherwise an over-long frame gives BAD_LENGTH (as the gateware decoder, rtl/link/framing.py, decides).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.limit = max_payload + CRC_BYTES
        self.cap = 2 * self.limit + 2
        self.reset()

    def reset(self) -> None:
        self._pending = bytearray()  # stuffed bytes of the frame in progress, up to cap
        self._dropped = False  # bytes past cap were seen
        self._dropped_bad = False  # a bad escape among them
        self._escape_open = False  # the last byte past cap was an unpaired ESC

    def feed(self, data: bytes) -> list[Received]:
        out = []
        segments = bytes(data).split(bytes([END]))
        for k, seg in enumerate(segments):
            self._absorb(seg)
            if k < len(segments) - 1:  # an END closes the frame
                if self._pending or self._dropped:
                    out.append(self._finish())
                self.reset()
        return out

    def _absorb(self, seg: bytes) -> None:
        room = self.cap - len(self._pending)
        if room > 0:
            self._pending += seg[:room]
            seg = seg[room:]
        if not seg:
            return
        if not self._dropped:
            self._dropped = True
            self._escape_open = _unstuff(bytes(self._pending))[2]
        i, n = 0, len(seg)
        while i < n:
            if self._escape_open:
                if seg[i] not in (ESC_END, ESC_ESC):
                    self._dropped_bad = True
                self._escape_open = False
                i += 1
                continue
            j = seg.find(ESC, i)
            if j < 0:
                break
            self._escape_open, i = True, j + 1

    def _finish(self) -> Received:
        body, bad, open_escape = _unstuff(bytes(self._pending))
        if self._dropped:
            if bad or self._dropped_bad or self._escape_open:
                return Received(None, LinkStatus.BAD_CRC, "bad escape in an over-long frame")
            return Received(None, LinkStatus.BAD_LENGTH, f"frame longer than {self.limit} bytes")
        if bad:
            return Received(None, LinkStatus.BAD_CRC, bad)
        if open_escape:
            return Received(None, LinkStatus.BAD_CRC, "frame ends inside an escape")
        if len(body) > self.limit:
            return Received(None, LinkStatus.BAD_LENGTH, f"frame longer than {self.limit} bytes")
        if len(body) < CRC_BYTES + 1:
            return Received(None, LinkStatus.BAD_LENGTH, f"frame of {len(body)} bytes holds no payload")
        payload, crc = bytes(body[:-CRC_BYTES]), int.from_bytes(body[-CRC_BYTES:], "little")
        if crc32(payload) != crc:
            return Received(None, LinkStatus.BAD_CRC, f"CRC {crc:#010x}, computed {crc32(payload):#010x}")
        return Received(payload)


def _unstuff(raw: bytes) -> tuple[bytearray, str, bool]:
    """(unstuffed bytes, the first bad escape or "", whether raw ends in an unpaired ESC)."""
    body = bytearray()
    i, n = 0, len(raw)
    while i < n:  # bytes.find keeps this fast: escapes are rare
        j = raw.find(ESC, i)
        if j < 0:
            body += raw[i:]
            break
        body += raw[i:j]
        if j + 1 == n:
            return body, "", True
        nxt = raw[j + 1]
        if nxt == ESC_END:
            body.append(END)
        elif nxt == ESC_ESC:
            body.append(ESC)
        else:
            return body, f"ESC followed by {nxt:#04x}", False
        i = j + 2
    return body, "", False


# ---- requests ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    code: Code
    args: tuple = ()
    values: tuple = ()  # PARAM_WRITE / SAMPLE_WRITE / DATA_WRITE

    def encode(self, vb: int) -> bytes:
        spec = REQUESTS[self.code].args
        out = bytearray([self.code])
        if spec == VALUES:
            out.append(len(self.values))
            out += encode_values(self.values, vb)
        else:
            for (_, n), a in zip(spec, self.args):
                out += int(a).to_bytes(n, "little")
        return bytes(out)

    def reply_length(self, vb: int) -> int:
        n = REQUESTS[self.code].reply_bytes
        return self.args[0] * vb if n is None else n

    def decode_data(self, data: bytes, vb: int):
        """The reply data of this request as Python values."""
        c = self.code
        if c in (Code.PARAM_READ, Code.OUTPUT_READ):
            return decode_values(data, vb)
        if c == Code.TRAIN_STEP:
            return data[0], bool(data[1])
        if c == Code.TRAIN_STEPS:
            return int.from_bytes(data[:8], "little"), bool(data[8])
        if c == Code.READ_STEP:
            return int.from_bytes(data, "little", signed=True)
        if data:
            return int.from_bytes(data, "little")
        return None


def nop(): return Request(Code.NOP)
def info(field_no): return Request(Code.INFO, (field_no,))
def set_register(reg, value): return Request(Code.SET, (int(reg), int(value)))
def param_seek(layer, row=0, col=0): return Request(Code.PARAM_SEEK, (layer, row, col))
def param_write(values): return Request(Code.PARAM_WRITE, values=tuple(np.asarray(values, np.int64).tolist()))
def param_read(count): return Request(Code.PARAM_READ, (count,))
def sample_seek(sample): return Request(Code.SAMPLE_SEEK, (sample,))
def sample_write(values): return Request(Code.SAMPLE_WRITE, values=tuple(np.asarray(values, np.int64).tolist()))
def output_read(count): return Request(Code.OUTPUT_READ, (count,))
def infer(): return Request(Code.INFER)
def train_step(step): return Request(Code.TRAIN_STEP, (step & 0xFFFF,))
def read_loss(index): return Request(Code.READ_LOSS, (index,))
def read_step(index): return Request(Code.READ_STEP, (index,))
def read_counter(index): return Request(Code.READ_COUNTER, (int(index),))
def clear_counters(): return Request(Code.CLEAR_COUNTERS)
def step_count(): return Request(Code.STEP_COUNT)
def data_seek(sample): return Request(Code.DATA_SEEK, (sample,))
def data_write(values): return Request(Code.DATA_WRITE, values=tuple(np.asarray(values, np.int64).tolist()))
def train_steps(step, count): return Request(Code.TRAIN_STEPS, (step & 0xFFFF, count))


def encode_request_payload(seq: int, requests: list[Request], vb: int) -> bytes:
    payload = bytes([seq & 0xFF]) + b"".join(r.encode(vb) for r in requests)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"{len(requests)} requests need {len(payload)} bytes; a frame holds {MAX_PAYLOAD}")
    reply = 3 + sum(r.reply_length(vb) for r in requests)
    if reply > MAX_PAYLOAD:
        raise ValueError(f"the reply to these {len(requests)} requests would need {reply} bytes; "
                         f"a frame holds {MAX_PAYLOAD}")
    return payload


class ParseError(ValueError):
    def __init__(self, status: LinkStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Parsed:
    seq: int
    requests: list[Request] = field(default_factory=list)
    unknown_at: int | None = None  # index of an unknown request code: the requests before it run


def parse_requests(payload: bytes, vb: int) -> Parsed:
    """The device's reading of a checked payload. Raises ParseError(BAD_LENGTH) if a request runs past
    the end, or if the reply would not fit in a frame (then nothing runs); an unknown code ends the list
    (the requests before it run, and only their replies count)."""
    if not payload:
        raise ParseError(LinkStatus.BAD_LENGTH, "empty payload")
    out = Parsed(payload[0])
    pos = 1
    while pos < len(payload):
        code = payload[pos]
        if code not in Code._value2member_map_:
            out.unknown_at = len(out.requests)
            return out
        code = Code(code)
        pos += 1
        spec = REQUESTS[code].args
        if spec == VALUES:
            if pos >= len(payload):
                raise ParseError(LinkStatus.BAD_LENGTH, f"{code.name}: no count")
            n = payload[pos]
            end = pos + 1 + n * vb
            if end > len(payload):
                raise ParseError(LinkStatus.BAD_LENGTH, f"{code.name}: {n} values run past the end")
            vals = tuple(decode_values(payload[pos + 1:end], vb))
            out.requests.append(Request(code, values=vals))
            pos = end
        else:
            args = []
            for _, n in spec:
                if pos + n > len(payload):
                    raise ParseError(LinkStatus.BAD_LENGTH, f"{code.name}: arguments run past the end")
                args.append(int.from_bytes(payload[pos:pos + n], "little"))
                pos += n
            out.requests.append(Request(code, tuple(args)))
    reply = 3 + sum(r.reply_length(vb) for r in out.requests)
    if reply > MAX_PAYLOAD:  # refused before anything runs: a device cannot send it, nor undo what ran
        raise ParseError(LinkStatus.BAD_LENGTH, f"the reply would need {reply} bytes; a frame holds {MAX_PAYLOAD}")
    return out


# ---- replies ----------------------------------------------------------------------------------------
@dataclass
class Reply:
    seq: int
    status: LinkStatus
    done: int
    data: bytes


def encode_reply(seq: int, status: LinkStatus, done: int, data: bytes) -> bytes:
    return bytes([seq & 0xFF, int(status), done]) + data


def decode_reply(payload: bytes) -> Reply:
    if len(payload) < 3:
        raise ParseError(LinkStatus.BAD_LENGTH, f"reply of {len(payload)} bytes")
    status = payload[1]
    if status not in LinkStatus._value2member_map_:
        raise ParseError(LinkStatus.UNKNOWN, f"reply status {status}")
    return Reply(payload[0], LinkStatus(status), payload[2], payload[3:])


def reply_mismatch(requests: list[Request], reply: Reply, vb: int) -> str:
    """Why `reply` cannot be the answer to the frame of `requests` ("" if it can): with STATUS OK every
    request completed, otherwise fewer did, and the data is exactly that of the completed requests.
    A reply that passed its CRC can still fail this (a device fault, or damage the CRC missed)."""
    n = len(requests)
    if (reply.status == LinkStatus.OK) != (reply.done == n) or reply.done > n:
        return f"STATUS {reply.status.name} with DONE {reply.done} of {n} requests"
    want = sum(r.reply_length(vb) for r in requests[:reply.done])
    if len(reply.data) != want:
        return f"{len(reply.data)} bytes of reply data where {want} were due"
    return ""


def split_reply_data(requests: list[Request], reply: Reply, vb: int) -> list:
    """The decoded data of each completed request (ParseError if the reply does not fit the frame)."""
    mismatch = reply_mismatch(requests, reply, vb)
    if mismatch:
        raise ParseError(LinkStatus.BAD_LENGTH, mismatch)
    out, pos = [], 0
    for r in requests[:reply.done]:
        n = r.reply_length(vb)
        out.append(r.decode_data(reply.data[pos:pos + n], vb))
        pos += n
    return out
