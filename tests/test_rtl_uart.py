"""rtl.uart in Amaranth's simulator: loopback, a far end whose clock is off by +-2%, glitches, framing
and overrun errors, the transmitter's exact bit timing, and divisor_for."""

import gc
import random

import pytest
from amaranth import Module

from rfsnn.rtl.link.uart import UART, UARTRx, UARTTx, divisor_for

DIVISORS = [4, 5, 13, 104]
SPECIAL = [0x00, 0xFF, 0xC0, 0x55]  # all low, all high, a lone edge late in the frame, every bit toggling


def frame_bits(byte: int, stop: int = 1) -> list[int]:
    """One 8N1 frame, bit by bit: start, data LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def line_levels(data, period: float, *, phase: float = 0.0, lead: int = 0, tail: int = 0,
                stop: int = 1) -> list[int]:
    """A far-end transmitter as the receiver's clock sees it: the line level at each clock.

    Idle (high) for `lead` clocks, then the frames of `data` back to back (no idle between them),
    bit k starting at clock lead + round(phase + k * period), each edge rounded on its own (so a
    period of divisor * 1.02 makes some bits a clock longer, spread over the frame), then idle for `tail`.
    """
    bits = [b for byte in data for b in frame_bits(byte, stop)]
    edges = [lead + int(phase + k * period + 0.5) for k in range(len(bits) + 1)]
    levels = [1] * edges[0]
    for k, bit in enumerate(bits):
        levels += [bit] * (edges[k + 1] - edges[k])
    return levels + [1] * tail


def run_rx(simulate, divisor, levels, *, ready=lambda clock: True, clear_at=()):
    """Drive UARTRx's line with `levels`, one per clock; ready(clock) says whether the sink takes.

    Returns (bytes taken, [(clock taken, byte)], overrun per clock, framing_error per clock).
    """
    dut = UARTRx(divisor)
    taken, overrun, framing = [], [], []

    async def bench(ctx):
        for clock, level in enumerate(levels):
            ctx.set(dut.rx, level)
            take = bool(ready(clock))
            ctx.set(dut.bytes.ready, take)
            ctx.set(dut.clear_errors, clock in clear_at)
            if take and ctx.get(dut.bytes.valid):
                taken.append((clock, ctx.get(dut.bytes.payload)))
            overrun.append(ctx.get(dut.overrun))
            framing.append(ctx.get(dut.framing_error))
            await ctx.tick()

    simulate(dut, bench)
    return [b for _, b in taken], taken, overrun, framing


def random_bytes(rng, n):
    data = SPECIAL + [rng.randrange(256) for _ in range(max(0, n - len(SPECIAL)))]
    rng.shuffle(data)
    return data


@pytest.mark.parametrize("divisor,n_bytes", [(4, 100), (5, 60), (13, 30), (104, 8)])
def test_loopback_with_back_pressure(divisor, n_bytes, simulate):
    """tx -> rx: every byte arrives, in order, while the source pauses and the sink stalls at random.

    Sink stalls last up to 4 bit times, shorter than a frame, so nothing may overrun.
    """
    rng = random.Random(divisor)
    data = random_bytes(rng, n_bytes)
    m = Module()
    m.submodules.uart = uart = UART(divisor)
    m.d.comb += uart.rx.eq(uart.tx)
    got = []

    async def bench(ctx):
        sent, gap, stall = 0, 0, 0
        limit = (n_bytes + 4) * 20 * divisor
        for _ in range(limit):
            offer = sent < len(data) and gap == 0
            ctx.set(uart.tx_bytes.valid, offer)
            ctx.set(uart.tx_bytes.payload, data[sent] if offer else 0)
            ctx.set(uart.rx_bytes.ready, stall == 0)
            took = offer and ctx.get(uart.tx_bytes.ready)
            if stall == 0 and ctx.get(uart.rx_bytes.valid):
                got.append(ctx.get(uart.rx_bytes.payload))
            assert not ctx.get(uart.overrun) and not ctx.get(uart.framing_error)
            await ctx.tick()
            if took:
                sent += 1
                gap = rng.choice([0, 0, 0, rng.randrange(1, 3 * divisor)])  # mostly back to back
            elif gap:
                gap -= 1
            if stall:
                stall -= 1
            elif rng.random() < 0.1:
                stall = rng.randrange(1, 4 * divisor)
            if len(got) == len(data) and sent == len(data):
                break
        for _ in range(12 * divisor):  # nothing more comes out
            assert not ctx.get(uart.rx_bytes.valid)
            await ctx.tick()

    simulate(m, bench)
    assert got == data


@pytest.mark.parametrize("divisor", DIVISORS)
@pytest.mark.parametrize("skew", [1.02, 0.98])
def test_far_end_clock_off_by_two_percent(divisor, skew, simulate):
    """A far end whose bit time is divisor * (1 +- 2%), frames back to back, at several phases."""
    rng = random.Random(divisor * 1000 + int(skew * 100))
    n, phases = (16, (0.0, 0.25, 0.5, 0.75)) if divisor < 100 else (4, (0.0, 0.5))
    for phase in phases:
        data = random_bytes(rng, n)
        levels = line_levels(data, divisor * skew, phase=phase, lead=3 * divisor, tail=12 * divisor)
        got, _, overrun, framing = run_rx(simulate, divisor, levels)
        assert got == data, (phase, [hex(b) for b in data], [hex(b) for b in got])
        assert not any(overrun) and not any(framing)


@pytest.mark.parametrize("divisor", DIVISORS)
def test_glitch_shorter_than_half_a_bit_is_ignored(divisor, simulate):
    """The longest low pulse shorter than half a bit, on an idle line, starts no frame; a real one then does."""
    glitch = (divisor + 1) // 2 - 1  # < divisor / 2
    levels = [1] * (2 * divisor) + [0] * glitch + [1] * (12 * divisor)
    levels += line_levels([0xA5], divisor, tail=12 * divisor)
    got, _, _, framing = run_rx(simulate, divisor, levels)
    assert got == [0xA5]  # a glitch taken for a start bit would have given an extra 0xFF first
    assert not any(framing)


@pytest.mark.parametrize("divisor", [4, 13])
def test_framing_error(divisor, simulate):
    """A low stop bit: the byte is dropped, framing_error sticks until clear_errors; the next byte is fine."""
    bad = line_levels([0x3C], divisor, lead=divisor, stop=0) + [0] * (2 * divisor)  # and a short break
    clear = len(bad) + 3 * divisor
    levels = bad + [1] * (6 * divisor) + line_levels([0xC3], divisor, tail=12 * divisor)
    got, _, overrun, framing = run_rx(simulate, divisor, levels, clear_at={clear})
    assert got == [0xC3]
    assert not any(overrun)
    first = framing.index(1)
    assert first < len(bad)  # set during the bad frame's stop bit...
    assert all(framing[first:clear + 1]) and not any(framing[clear + 1:])  # ...held until cleared


@pytest.mark.parametrize("divisor", [4, 13])
def test_overrun(divisor, simulate):
    """Two bytes arrive while the sink never takes: the first is kept, the second dropped, overrun set."""
    levels = line_levels([0x81, 0x7E], divisor, lead=divisor, tail=6 * divisor)
    take_at = len(levels)
    clear = take_at + 2 * divisor
    levels += [1] * (4 * divisor)
    got, _, overrun, _ = run_rx(simulate, divisor, levels, ready=lambda c: c == take_at, clear_at={clear})
    assert got == [0x81]
    first = overrun.index(1)
    assert all(overrun[first:clear + 1]) and not any(overrun[clear + 1:])

    # Taking the offered byte on the very clock the second completes loses nothing.
    got, _, overrun, _ = run_rx(simulate, divisor, levels, ready=lambda c: c in (first - 1, take_at))
    assert got == [0x81, 0x7E]
    assert not any(overrun)


def run_tx(simulate, divisor, data, *, n_clocks, offer=lambda clock, sent: True):
    """Feed UARTTx data[sent] whenever offer(clock, sent); return the tx level per clock and the transfer clocks."""
    dut = UARTTx(divisor)
    levels, transfers = [], []

    async def bench(ctx):
        sent = 0
        for clock in range(n_clocks):
            valid = sent < len(data) and offer(clock, sent)
            ctx.set(dut.bytes.valid, valid)
            ctx.set(dut.bytes.payload, data[sent] if valid else 0)
            levels.append(ctx.get(dut.tx))
            if valid and ctx.get(dut.bytes.ready):
                transfers.append(clock)
                sent += 1
            await ctx.tick()

    simulate(dut, bench)
    return levels, transfers


@pytest.mark.parametrize("divisor", DIVISORS)
def test_tx_timing_back_to_back(divisor, simulate):
    """Idle high; each bit exactly `divisor` clocks; frames back to back with exactly one stop bit."""
    data = [0x55, 0x00, 0xFF, 0xC0, 0xAA] if divisor < 100 else [0x55, 0xC0]
    frame = 10 * divisor
    levels, transfers = run_tx(simulate, divisor, data, n_clocks=3 + len(data) * frame + 3 * divisor,
                               offer=lambda clock, sent: clock >= 3)
    assert transfers == [3 + i * frame for i in range(len(data))]  # taken as soon as the last stop clock
    start = transfers[0] + 1  # the start bit begins the clock after the transfer
    assert levels[:start] == [1] * start
    expected = [b for byte in data for b in frame_bits(byte) for _ in range(divisor)]
    assert levels[start:start + len(expected)] == expected
    assert set(levels[start + len(expected):]) == {1}


@pytest.mark.parametrize("divisor", [4, 5])
def test_tx_idles_high_between_bytes(divisor, simulate):
    """With pauses in the source, the line stays high between frames and each frame is still exact."""
    data = [0x00, 0x01, 0x80]
    frame = 10 * divisor
    at = [0, frame + 7, 3 * frame]  # a pause of 6 clocks, then one of a whole frame
    levels, transfers = run_tx(simulate, divisor, data, n_clocks=4 * frame + divisor,
                               offer=lambda clock, sent: clock >= at[sent])
    assert transfers == at
    expected = [1] * (4 * frame + divisor)
    for t, byte in zip(at, data):
        bits = [b for b in frame_bits(byte) for _ in range(divisor)]
        expected[t + 1:t + 1 + len(bits)] = bits
    assert levels == expected


def test_divisor_for():
    assert divisor_for(12_000_000, 3_000_000) == 4  # iCEBreaker
    assert divisor_for(48_000_000, 12_000_000) == 4
    assert divisor_for(12_000_000, 115_200) == 104  # 0.16% off
    with pytest.raises(ValueError, match=r"2\.00% off.*2941176 baud \(divisor 17\).*3125000 baud"):
        divisor_for(50_000_000, 3_000_000)  # 16.67 clocks per bit
    with pytest.raises(ValueError, match=r"at least 4.*3000000 baud is the most"):
        divisor_for(12_000_000, 4_000_000)


def test_uart_converts_to_verilog():
    """Every port of UART is a plain signal or a normal stream, so it can be a top level."""
    from amaranth.back import verilog

    text = verilog.convert(UART(4), name="uart")
    ports = {p.strip() for p in text.split("module uart(")[1].split(")")[0].split(",")}
    assert ports == {"clk", "rst", "rx", "tx", "overrun", "framing_error", "clear_errors",
                     "rx_bytes__payload", "rx_bytes__valid", "rx_bytes__ready",
                     "tx_bytes__payload", "tx_bytes__valid", "tx_bytes__ready"}


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # the half-built component
def test_divisor_below_four_is_refused():
    for cls in (UARTRx, UARTTx, UART):
        with pytest.raises(ValueError, match="divisor must be an int >= 4"):
            cls(3)
    gc.collect()  # the half-built components go while the warning filter above is still in force
