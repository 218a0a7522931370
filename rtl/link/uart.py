"""8N1 UART, transmitter and receiver: the byte pipe under the host link (docs/protocol.md).

The link runs at 3 Mbaud from the iCEBreaker's 12 MHz (and 12 Mbaud from 48 MHz), so one bit may be as
short as 4 clocks. Hence the choices here:
- The bit time is a fixed integer `divisor` (clocks per bit) chosen at elaboration; `divisor_for`
  refuses a clock/baud pair whose rounding error would eat the receiver's timing margin (see below),
  and divisors below 4, the smallest this design is specified and tested for (at 2 the mid-bit
  re-check of the start bit would be the very sample that found it).
- The receiver samples each bit once, at its middle, counted from the first low sample of the start
  bit. At divisor 4 that edge is only known to one clock (a quarter bit), so the far end's bit time
  may be at most about 2.8% longer or 5% shorter than ours (the stop bit's sample must still fall
  inside the stop bit); wider margins at larger divisors. `divisor_for` therefore keeps our own
  rounding below 2%, and the tests check a far end off by +-2% at every divisor.
- The receiver goes back to idle right after sampling the middle of the stop bit, so a transmitter
  up to that much faster than us, sending back to back, does not lose the next start bit.
- The transmitter sends back to back with exactly one stop bit when its source always has data.
- Every line output is a flip-flop (no combinational glitches on `tx`).

Receiver errors are reported, not signalled in band: a byte with a bad stop bit is dropped and sets the
sticky `framing_error`; a byte that completes while the previous one is still being offered is dropped
and sets the sticky `overrun`. Both stay set until `clear_errors`. The host protocol's CRC catches the
lost byte anyway; the flags say why.
"""
from __future__ import annotations

from fractions import Fraction

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

MIN_DIVISOR = 4
MAX_ERROR = Fraction(2, 100)  # rounding error of the bit time that divisor_for accepts (exclusive)


def _hz(x) -> str:
    return f"{float(x):.0f}"


def line_bits(data: bytes) -> list[int]:
    """The 8N1 line levels that carry `data`, one per bit time: start 0, eight data bits LSB first,
    stop 1. What UARTTx sends and UARTRx expects; testbenches drive and read the pins with it."""
    return [level for b in data for level in (0, *((b >> i) & 1 for i in range(8)), 1)]


def divisor_for(clock_hz: int | float, baud: int | float) -> int:
    """Clocks per bit for `baud` from a `clock_hz` clock: round(clock_hz / baud).

    Raises ValueError when the divisor is below 4, or when the bit time is off by 2% or more, i.e.
    |divisor - clock_hz / baud| >= 2% of clock_hz / baud (in baud: 1.96% slow or 2.04% fast). Exactly
    2% is refused too (50 MHz / 3 Mbaud is exactly 2%): at divisor 4 the receiver only tolerates about
    2.8% between the two ends, and the far end's own error comes on top of ours.
    """
    if clock_hz <= 0 or baud <= 0:
        raise ValueError(f"clock_hz and baud must be positive (got {clock_hz}, {baud})")
    ideal = Fraction(clock_hz) / Fraction(baud)  # exact, so 50 MHz / 3 Mbaud is exactly 2%, not 1.99..%
    divisor = round(ideal)
    if divisor < MIN_DIVISOR:
        raise ValueError(
            f"{_hz(baud)} baud from {_hz(clock_hz)} Hz needs {float(ideal):.3g} clocks per bit; the UART "
            f"needs at least {MIN_DIVISOR}, so {_hz(Fraction(clock_hz) / MIN_DIVISOR)} baud is the most "
            f"this clock allows")
    error = abs(divisor - ideal) / ideal
    if error >= MAX_ERROR:
        options = sorted({d for d in (int(ideal), int(ideal) + 1) if d >= MIN_DIVISOR}, reverse=True)
        exact = " or ".join(f"{_hz(Fraction(clock_hz) / d)} baud (divisor {d})" for d in options)
        raise ValueError(
            f"{_hz(baud)} baud from {_hz(clock_hz)} Hz: {float(ideal):.3f} clocks per bit rounds to "
            f"{divisor}, a bit time {float(error) * 100:.2f}% off (the error must be below "
            f"{float(MAX_ERROR) * 100:g}%); this clock would give {exact}")
    return divisor


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an int >= {MIN_DIVISOR} (clocks per bit), got {divisor!r}; "
                         f"see divisor_for()")
    return divisor


class UARTTx(wiring.Component):
    """8N1 transmitter.

    - `bytes`: a byte is taken on a clock with valid & ready. ready is high while idle and on the last
      clock of the stop bit, so a source that always has data gets back-to-back frames with exactly one
      stop bit. ready does not depend on valid.
    - `tx`: the line, idle high, from a flip-flop. The start bit begins the clock after the transfer;
      every bit lasts exactly `divisor` clocks.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "bytes": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))  # clocks left in the current bit after this one
        bits_left = Signal(range(10))  # bits still to send after the current one (8 data + stop)
        data = Signal(8)  # the bits still to send, LSB first; 1s shift in, so the stop bit comes last

        idle = (bits_left == 0) & (timer == 0)  # idle, or the last clock of the stop bit
        m.d.comb += self.bytes.ready.eq(idle)
        with m.If(idle):
            with m.If(self.bytes.valid):
                m.d.sync += [
                    self.tx.eq(0),  # start bit
                    data.eq(self.bytes.payload),
                    bits_left.eq(9),
                    timer.eq(self.divisor - 1),
                ]
        with m.Elif(timer == 0):
            m.d.sync += [
                self.tx.eq(data[0]),
                data.eq(Cat(data[1:], 1)),
                bits_left.eq(bits_left - 1),
                timer.eq(self.divisor - 1),
            ]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m


class UARTRx(wiring.Component):
    """8N1 receiver.

    - `rx`: the line (asynchronous; two flip-flops synchronise it, reset value high).
    - `bytes`: a received byte is offered (valid) until taken. It appears at the middle of the stop bit.
    - `overrun`: sticky; a byte completed while the previous one was still offered. The new byte is
      dropped, the offered one is kept. If the offered byte is taken on the very clock the new one
      completes, nothing is lost.
    - `framing_error`: sticky; the stop bit was low. The byte is dropped and the receiver waits for the
      line to go high again before it looks for a start bit (a break is one error, not a stream of 0s).
    - `clear_errors`: clears both flags; an error on the same clock wins.

    Timing: the first low sample of the line starts a frame; (divisor - 1) // 2 clocks later (the middle
    of the start bit) the line must still be low, or it was a glitch and the receiver goes back to idle
    (a low pulse shorter than half a bit is ignored). From there each data bit and the stop bit are
    sampled once, `divisor` clocks apart.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "bytes": Out(stream.Signature(8)),
            "overrun": Out(1),
            "framing_error": Out(1),
            "clear_errors": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1, stages=2)

        half = (self.divisor - 1) // 2  # clocks from the first low sample to the start bit's middle
        timer = Signal(range(self.divisor))  # clocks until the next sample point
        bit = Signal(range(8))  # data bits sampled so far
        shift = Signal(8)  # data bits, LSB first: each new bit enters at the top

        with m.If(self.clear_errors):
            m.d.sync += [self.overrun.eq(0), self.framing_error.eq(0)]
        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(half - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"  # high again at mid-bit: a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [
                        shift.eq(Cat(shift[1:], rx)),
                        bit.eq(bit + 1),
                        timer.eq(self.divisor - 1),
                    ]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    with m.If(self.bytes.valid & ~self.bytes.ready):
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.bytes.payload.eq(shift), self.bytes.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UART(wiring.Component):
    """UARTRx and UARTTx with one divisor, under one roof (ports named as on the two halves, with rx_/tx_)."""

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "rx_bytes": Out(stream.Signature(8)),
            "tx_bytes": In(stream.Signature(8)),
            "overrun": Out(1),
            "framing_error": Out(1),
            "clear_errors": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        wiring.connect(m, wiring.flipped(self.rx_bytes), rx.bytes)
        wiring.connect(m, wiring.flipped(self.tx_bytes), tx.bytes)
        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.overrun.eq(rx.overrun),
            self.framing_error.eq(rx.framing_error),
            rx.clear_errors.eq(self.clear_errors),
        ]
        return m
