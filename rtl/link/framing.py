"""SLIP framing with a CRC-32 for the host link (docs/protocol.md, "Framing"), in both directions.

The reference behaviour is rfsnn.sim.contract.protocol: `SLIPEncoder` emits exactly `frame(payload)`, and
`SLIPDecoder` gives, frame by frame, the verdicts of `Deframer` (the same payload when it accepts a
frame, the same status when it refuses one). Both stream: neither holds a frame, and the frame buffer (which the dispatcher needs anyway, since a
request runs only after its whole frame has been checked) is the only place a frame is stored.

Decoder. A body is payload || CRC, and which of its bytes are the CRC is known only at the END. The
unstuffed bytes therefore pass through a 4-byte delay line: a byte leaves it (and is delivered as
payload) only when 4 more bytes have arrived behind it, so at the END the line holds exactly the CRC
and nothing of the CRC was delivered. The verdict (payload length and status) follows the frame's last
payload byte on its own stream; the frame buffer writes bytes as they come and, on the verdict, keeps
the frame (OK) or drops it. The CRC is checked by its residue: the CRC unit takes every body byte,
CRC included, and a body whose last 4 bytes are the CRC (little-endian) of the others leaves the
register at a fixed residue (`SerialCRC.match_detected`). For a given payload
exactly one 4-byte suffix does that, so this accepts the same frames as comparing the CRC over the
payload with the received one, without a 32-bit comparator or a second tap on the delay line.

Encoder. END, then each payload byte as it arrives (stuffed, and into the CRC unit), then the 4 CRC
bytes little-endian (stuffed), then END. One output byte per clock at most, and it waits for the
output's ready: a UART transmitter takes a byte only every ten bit-times.

The CRC unit takes a byte per clock (amaranth.lib.crc), or with `serial_crc` one bit per clock
(`SerialCRC`, 9 clocks a byte), which saves the iCE40 about 85 logic cells of XOR trees. The wire is
slower than either (40 clocks a byte at 3 Mbaud), but a batch that waited in the receive FIFO during a
step is decoded after it: on the virtual board at 15 MHz the serial CRC made a mexican-hat step 3%
longer (6.58 against 6.37 ms, bench/link.py). So only the iCEBreaker's build uses it.
"""
from __future__ import annotations

from amaranth import C, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

# RFC 1055 SLIP bytes (the same as rfsnn.sim.contract.protocol's; the tests check that).
END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
CRC_BYTES = 4
MAX_PAYLOAD = 255

CRC = catalog.CRC32_ISO_HDLC

# One byte of a payload on its way to the encoder: `last` on the final byte of the payload.
PAYLOAD_BYTE = data.StructLayout({"data": 8, "last": 1})


def _reflected_poly(width: int, poly: int) -> int:
    return int(f"{poly:0{width}b}"[::-1], 2)


class SerialCRC(wiring.Component):
    """The link's CRC (CRC-32/ISO-HDLC, as rfsnn.sim.contract.protocol computes it), one bit per clock.

    `start` (one clock) restarts it; a byte is taken on `valid` while `ready`, and `ready` is low for
    the 8 clocks it takes to shift it in (least significant bit first: the algorithm is reflected).
    `crc` is the CRC of the bytes so far; `match_detected` is high when those bytes end with their own
    CRC (little-endian), the register then holding the algorithm's fixed residue.
    """
    ALG = CRC

    def __init__(self):
        super().__init__({"start": In(1), "data": In(8), "valid": In(1), "ready": Out(1),
                          "crc": Out(32), "match_detected": Out(1)})

    @classmethod
    def step(cls, reg: int, byte: int) -> int:
        """The register after one byte (what the gateware's eight clocks do)."""
        poly = _reflected_poly(32, cls.ALG.polynomial)
        for i in range(8):
            feedback = (reg ^ (byte >> i)) & 1
            reg = (reg >> 1) ^ (poly if feedback else 0)
        return reg

    @classmethod
    def residue(cls) -> int:
        reg = cls.ALG.initial_crc
        for b in b"rfsnn":
            reg = cls.step(reg, b)
        for b in (reg ^ cls.ALG.xor_output).to_bytes(4, "little"):  # the payload's CRC, little-endian
            reg = cls.step(reg, b)
        return reg

    def elaborate(self, platform):
        m = Module()
        alg = self.ALG
        assert alg.reflect_input and alg.reflect_output and alg.crc_width == 32
        reg = Signal(32, init=alg.initial_crc)
        shift = Signal(8)  # the byte's bits still to go, lowest first
        left = Signal(range(9))
        m.d.comb += [self.ready.eq(left == 0), self.crc.eq(reg ^ alg.xor_output),
                     self.match_detected.eq(reg == self.residue())]
        with m.If(self.start):
            m.d.sync += [reg.eq(alg.initial_crc), left.eq(0)]
        with m.Elif(self.valid & self.ready):
            m.d.sync += [shift.eq(self.data), left.eq(8)]
        with m.Elif(left != 0):
            poly = Const(_reflected_poly(32, alg.polynomial), 32)
            m.d.sync += [reg.eq((reg >> 1) ^ Mux(reg[0] ^ shift[0], poly, 0)), shift.eq(shift >> 1),
                         left.eq(left - 1)]
        return m


def _crc_unit(serial: bool):
    return SerialCRC() if serial else CRC(8).create()


def _ready(crc) -> Value:
    """The CRC unit can take a byte (always, for the byte-wide one)."""
    return crc.ready if isinstance(crc, SerialCRC) else C(1, 1)


class FrameStatus(enum.Enum, shape=3):
    """A received frame's verdict. The values are the protocol's STATUS codes (docs/protocol.md), so a
    refusal can go into the reply's STATUS byte as it is."""
    OK = 0
    BAD_CRC = 3
    BAD_LENGTH = 4


def verdict_layout(max_payload: int = MAX_PAYLOAD) -> data.StructLayout:
    """`length`: payload bytes the decoder delivered for this frame (all of the payload if OK)."""
    return data.StructLayout({"length": unsigned(max_payload.bit_length()), "status": FrameStatus})


class SLIPDecoder(wiring.Component):
    """Wire bytes in, checked payloads out (rfsnn.sim.contract.protocol.Deframer in gateware).

    - `bytes`: the received bytes (from the UART receiver).
    - `payload`: the unstuffed payload bytes of each frame, in order, without the CRC; delivered before
      the frame is known to be good.
    - `frame`: one verdict per non-empty frame, at its closing END: `length` (the number of `payload`
      bytes delivered since the previous verdict) and `status`, in Deframer's order of checks:
      BAD_CRC if an ESC anywhere in the frame is followed by anything but ESC_END / ESC_ESC, or the
      frame ends inside an escape (so END ESC END is BAD_CRC); else BAD_LENGTH if the body is longer
      than max_payload + 4 bytes (no byte past that is delivered, but the escapes are still checked)
      or shorter than CRC + 1 byte; else BAD_CRC if the CRC does not match; else OK. Bytes before the
      first END form a frame like any other; END END (an empty frame) gives no verdict.

    (The verdicts are those of Deframer reading each frame whole. Deframer keeps at most 2 x (max_payload
    + 4) + 3 stuffed bytes of a frame between two feed() calls, so for a longer frame split across
    calls its status can differ, BAD_LENGTH against BAD_CRC; either refuses the frame.)

    Ordering: every payload byte of a frame is transferred before its verdict becomes valid, and no
    byte of the next frame is delivered before the verdict has been transferred; at most one of
    `payload.valid` and `frame.valid` is high at a time. One input byte gives at most one output
    item; the decoder takes a byte per clock while its outputs are not stalled
    (`bytes.ready` falls only when an output holds an item its consumer has not taken). A UART
    receiver cannot wait, so the consumer should take items within a byte time.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, serial_crc: bool = False):
        if max_payload < 1:
            raise ValueError(f"max_payload must be at least 1, not {max_payload}")
        self.max_payload, self.serial_crc = max_payload, serial_crc
        super().__init__({
            "bytes": In(stream.Signature(8)),
            "payload": Out(stream.Signature(8)),
            "frame": Out(stream.Signature(verdict_layout(max_payload))),
        })

    def elaborate(self, platform):
        m = Module()
        limit = self.max_payload + CRC_BYTES  # body bytes a frame may hold

        m.submodules.crc = crc = _crc_unit(self.serial_crc)
        count = Signal(range(limit + 1))     # body bytes of this frame so far (capped at limit)
        delay = [Signal(8, name=f"delay{i}") for i in range(CRC_BYTES)]  # delay[0]: the newest byte
        active = Signal()                    # a byte other than END since the last END
        escape = Signal()                    # the previous byte was ESC
        bad_escape = Signal()                # ESC + a wrong byte: BAD_CRC whatever follows; ignore up to END
        too_long = Signal()                  # more than `limit` body bytes: BAD_LENGTH unless an escape is bad

        # Take a byte only if every output can take an item this clock, and the CRC has the last one in.
        m.d.comb += self.bytes.ready.eq((~self.payload.valid | self.payload.ready) &
                                        (~self.frame.valid | self.frame.ready) & _ready(crc))
        with m.If(self.payload.ready):
            m.d.sync += self.payload.valid.eq(0)
        with m.If(self.frame.ready):
            m.d.sync += self.frame.valid.eq(0)

        byte = self.bytes.payload
        body_byte = Signal(8)  # the unstuffed byte to append, when `append` is high
        append = Signal()
        m.d.comb += crc.data.eq(body_byte)

        with m.If(self.bytes.valid & self.bytes.ready):
            with m.If(byte == END):
                with m.If(active):  # END END gives no verdict
                    status = self.frame.payload.status
                    with m.If(bad_escape | escape):
                        m.d.sync += status.eq(FrameStatus.BAD_CRC)
                    with m.Elif(too_long | (count < CRC_BYTES + 1)):
                        m.d.sync += status.eq(FrameStatus.BAD_LENGTH)
                    with m.Elif(crc.match_detected):
                        m.d.sync += status.eq(FrameStatus.OK)
                    with m.Else():
                        m.d.sync += status.eq(FrameStatus.BAD_CRC)
                    m.d.sync += [
                        self.frame.valid.eq(1),
                        self.frame.payload.length.eq(Mux(count > CRC_BYTES, count - CRC_BYTES, 0)),
                    ]
                m.d.sync += [count.eq(0), active.eq(0), escape.eq(0), bad_escape.eq(0), too_long.eq(0)]
                m.d.comb += crc.start.eq(1)
            with m.Else():
                m.d.sync += active.eq(1)
                with m.If(bad_escape):
                    pass  # the rest of a refused frame
                with m.Elif(escape):
                    m.d.sync += escape.eq(0)
                    with m.If(byte == ESC_END):
                        m.d.comb += [body_byte.eq(END), append.eq(1)]
                    with m.Elif(byte == ESC_ESC):
                        m.d.comb += [body_byte.eq(ESC), append.eq(1)]
                    with m.Else():
                        m.d.sync += bad_escape.eq(1)
                with m.Elif(byte == ESC):
                    m.d.sync += escape.eq(1)
                with m.Else():
                    m.d.comb += [body_byte.eq(byte), append.eq(1)]

        with m.If(append & ~too_long):
            with m.If(count == limit):
                m.d.sync += too_long.eq(1)
            with m.Else():
                m.d.comb += crc.valid.eq(1)
                m.d.sync += count.eq(count + 1)
                m.d.sync += delay[0].eq(body_byte)
                for i in range(1, CRC_BYTES):
                    m.d.sync += delay[i].eq(delay[i - 1])
                with m.If(count >= CRC_BYTES):  # the oldest byte is known not to be CRC: deliver it
                    m.d.sync += [self.payload.valid.eq(1), self.payload.payload.eq(delay[-1])]
        return m


class SLIPEncoder(wiring.Component):
    """Payload bytes in, one wire frame out (rfsnn.sim.contract.protocol.frame in gateware).

    - `payload`: the bytes of one payload (at least one), `last` on its final byte. The encoder takes
      them as it sends them; the next byte after `last` starts the next frame.
    - `bytes`: END, the stuffed payload, the stuffed CRC-32/ISO-HDLC of the payload (4 bytes,
      little-endian), END. `bytes.valid` does not wait for `bytes.ready`, and nothing is lost while
      `bytes.ready` is low.
    """

    def __init__(self, serial_crc: bool = False):
        self.serial_crc = serial_crc
        super().__init__({
            "payload": In(stream.Signature(PAYLOAD_BYTE)),
            "bytes": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = _crc_unit(self.serial_crc)
        crc_ready = _ready(crc)

        can_emit = Signal()   # the output register is free or being emptied this clock
        m.d.comb += can_emit.eq(~self.bytes.valid | self.bytes.ready)
        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)

        def emit(value):
            m.d.sync += [self.bytes.valid.eq(1), self.bytes.payload.eq(value)]

        crc_index = Signal(2)  # which CRC byte goes next (little-endian: 0 = bits 7..0)
        escaped = Signal()     # the ESC of the current byte has gone; its ESC_END / ESC_ESC goes next

        def send_stuffed(value, consume):
            """Send `value` (ESC then a code if it is END or ESC); on its last wire byte, `consume`."""
            special = (value == END) | (value == ESC)
            with m.If(special & ~escaped):
                emit(ESC)
                m.d.sync += escaped.eq(1)
            with m.Else():
                emit(Mux(value == END, ESC_END, Mux(value == ESC, ESC_ESC, value)))
                m.d.sync += escaped.eq(0)
                consume()

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.payload.valid & can_emit):
                    emit(END)
                    m.d.comb += crc.start.eq(1)
                    m.next = "DATA"
            with m.State("DATA"):
                def take_byte():
                    m.d.comb += [self.payload.ready.eq(1), crc.valid.eq(1)]
                    with m.If(self.payload.payload.last):
                        m.next = "CRC"
                m.d.comb += crc.data.eq(self.payload.payload.data)
                with m.If(self.payload.valid & can_emit & crc_ready):
                    send_stuffed(self.payload.payload.data, take_byte)
            with m.State("CRC"):
                def next_crc_byte():
                    m.d.sync += crc_index.eq(crc_index + 1)
                    with m.If(crc_index == CRC_BYTES - 1):
                        m.next = "CLOSE"
                with m.If(can_emit & crc_ready):
                    send_stuffed(crc.crc.word_select(crc_index, 8), next_crc_byte)
            with m.State("CLOSE"):
                with m.If(can_emit):
                    emit(END)
                    m.next = "IDLE"
        return m
