"""The host link protocol (docs/protocol.md) as a sans-IO codec: bytes in, messages out, no I/O.

- framing: `frame(payload)` -> wire bytes (SLIP, CRC-32); `Deframer.feed(bytes)` -> checked payloads
  or the reason a frame was refused;
- requests: `Request` values (built by the helpers below), `encode_request_frame`, and on the device
  side `parse_requests`; replies: `encode_reply`, `decode_reply`, `Request.decode_data`.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
MAX_PAYLOAD = 255
CRC_BYTES = 4


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


class LinkStatus(IntEnum):
    OK = 0
    RANGE = 1
    UNKNOWN = 2
    BAD_CRC = 3
    BAD_LENGTH = 4
    BUSY = 5


# Arguments of each request: a tuple of (name, bytes, signed); "values" is a count u8 then count values.
_ARGS = {
    Code.NOP: (), Code.INFO: (("field", 1),), Code.SET: (("register", 1), ("value", 4)),
    Code.PARAM_SEEK: (("layer", 1), ("row", 2), ("col", 2)), Code.PARAM_WRITE: "values", Code.PARAM_READ: (("count", 1),),
    Code.SAMPLE_SEEK: (("sample", 2),), Code.SAMPLE_WRITE: "values", Code.OUTPUT_READ: (("count", 1),),
    Code.INFER: (), Code.TRAIN_STEP: (("step", 2),), Code.READ_LOSS: (("index", 1),),
    Code.READ_STEP: (("index", 1),), Code.READ_COUNTER: (("index", 1),), Code.CLEAR_COUNTERS: (),
    Code.STEP_COUNT: (),
}


def value_bytes(cfg) -> int:
    """VB: bytes per weight, input, target or output value on the link."""
    return math.ceil(max(cfg.w_bits, cfg.x_bits, cfg.y_bits) / 8)


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
    """Feed it bytes as they arrive; it returns each completed frame. Resynchronises at every END."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.limit = max_payload + CRC_BYTES
        self._buf = bytearray()
        self._escape = False
        self._error: tuple[LinkStatus, str] | None = None

    def reset(self) -> None:
        self._buf.clear()
        self._escape = False
        self._error = None

    def feed(self, data: bytes) -> list[Received]:
        out = []
        for byte in data:
            if byte == END:
                if self._buf or self._error:
                    out.append(self._finish())
                self.reset()
                continue
            if self._error:
                continue  # discard the rest of a bad frame up to the next END
            if self._escape:
                self._escape = False
                if byte == ESC_END:
                    byte = END
                elif byte == ESC_ESC:
                    byte = ESC
                else:
                    self._error = (LinkStatus.BAD_CRC, f"ESC followed by {byte:#04x}")
                    continue
            elif byte == ESC:
                self._escape = True
                continue
            if len(self._buf) >= self.limit:
                self._error = (LinkStatus.BAD_LENGTH, f"frame longer than {self.limit} bytes")
                continue
            self._buf.append(byte)
        return out

    def _finish(self) -> Received:
        if self._error:
            return Received(None, *self._error)
        if self._escape:
            return Received(None, LinkStatus.BAD_CRC, "frame ends inside an escape")
        if len(self._buf) < CRC_BYTES + 1:
            return Received(None, LinkStatus.BAD_LENGTH, f"frame of {len(self._buf)} bytes holds no payload")
        payload, crc = bytes(self._buf[:-CRC_BYTES]), int.from_bytes(self._buf[-CRC_BYTES:], "little")
        if crc32(payload) != crc:
            return Received(None, LinkStatus.BAD_CRC, f"CRC {crc:#010x}, computed {crc32(payload):#010x}")
        return Received(payload)


# ---- requests ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    code: Code
    args: tuple = ()
    values: tuple = ()  # PARAM_WRITE / SAMPLE_WRITE

    def encode(self, vb: int) -> bytes:
        spec = _ARGS[self.code]
        out = bytearray([self.code])
        if spec == "values":
            out.append(len(self.values))
            for v in self.values:
                out += int(v).to_bytes(vb, "little", signed=True)
        else:
            for (_, n), a in zip(spec, self.args):
                out += int(a).to_bytes(n, "little")
        return bytes(out)

    def reply_length(self, vb: int) -> int:
        c = self.code
        if c in (Code.INFO,):
            return 4
        if c in (Code.PARAM_READ, Code.OUTPUT_READ):
            return self.args[0] * vb
        if c in (Code.INFER, Code.READ_LOSS, Code.READ_COUNTER):
            return 8
        if c == Code.TRAIN_STEP:
            return 2
        if c == Code.READ_STEP:
            return 4
        if c == Code.STEP_COUNT:
            return 2
        return 0

    def decode_data(self, data: bytes, vb: int):
        """The reply data of this request as Python values."""
        c = self.code
        if c in (Code.PARAM_READ, Code.OUTPUT_READ):
            return [int.from_bytes(data[i:i + vb], "little", signed=True) for i in range(0, len(data), vb)]
        if c == Code.TRAIN_STEP:
            return data[0], bool(data[1])
        if c == Code.READ_STEP:
            return int.from_bytes(data, "little", signed=True)
        if data:
            return int.from_bytes(data, "little")
        return None


def nop(): return Request(Code.NOP)
def info(field_no): return Request(Code.INFO, (field_no,))
def set_register(reg, value): return Request(Code.SET, (int(reg), int(value)))
def param_seek(layer, row=0, col=0): return Request(Code.PARAM_SEEK, (layer, row, col))
def param_write(values): return Request(Code.PARAM_WRITE, values=tuple(int(v) for v in values))
def param_read(count): return Request(Code.PARAM_READ, (count,))
def sample_seek(sample): return Request(Code.SAMPLE_SEEK, (sample,))
def sample_write(values): return Request(Code.SAMPLE_WRITE, values=tuple(int(v) for v in values))
def output_read(count): return Request(Code.OUTPUT_READ, (count,))
def infer(): return Request(Code.INFER)
def train_step(step): return Request(Code.TRAIN_STEP, (step & 0xFFFF,))
def read_loss(index): return Request(Code.READ_LOSS, (index,))
def read_step(index): return Request(Code.READ_STEP, (index,))
def read_counter(index): return Request(Code.READ_COUNTER, (int(index),))
def clear_counters(): return Request(Code.CLEAR_COUNTERS)
def step_count(): return Request(Code.STEP_COUNT)


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
    the end (then nothing runs); an unknown code ends the list (the requests before it run)."""
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
        spec = _ARGS[code]
        if spec == "values":
            if pos >= len(payload):
                raise ParseError(LinkStatus.BAD_LENGTH, f"{code.name}: no count")
            n = payload[pos]
            end = pos + 1 + n * vb
            if end > len(payload):
                raise ParseError(LinkStatus.BAD_LENGTH, f"{code.name}: {n} values run past the end")
            vals = tuple(int.from_bytes(payload[p:p + vb], "little", signed=True) for p in range(pos + 1, end, vb))
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


def split_reply_data(requests: list[Request], reply: Reply, vb: int) -> list:
    """The decoded data of each completed request."""
    out, pos = [], 0
    for r in requests[:reply.done]:
        n = r.reply_length(vb)
        if pos + n > len(reply.data):
            raise ParseError(LinkStatus.BAD_LENGTH, f"reply data ends inside {r.code.name}")
        out.append(r.decode_data(reply.data[pos:pos + n], vb))
        pos += n
    return out
