"""The virtual board: rtl.top.DeviceTop on a Verilog simulator, its UART pins bridged to a pseudo-terminal.

Started by rfsnn.sim.virtual_board (`rfsnn virtual-board`), which passes through the environment:

    RFSNN_VB_PORT_FILE   where to write the terminal's path once the device is out of reset
    RFSNN_VB_PERIOD_PS   the clock period in picoseconds
    RFSNN_VB_DIVISOR     clocks per UART bit (the divisor DeviceTop was built with)
    RFSNN_VB_STATS_FILE  (optional) where to write the simulated time, in ps, each time the board goes
                         idle: bench/link.py measures link and compute time with it
    RFSNN_VB_LIFELINES   pids, comma-separated, the first this simulator's parent: the simulation ends
                         as soon as any of them exits, so that a killed host leaves no simulator behind

Any serial program opens the terminal and talks to the gateware's real UART: the bytes it writes are
driven onto the rx pin as 8N1 bits at the board's baud rate in simulated time, and the bytes the
gateware sends on the tx pin are sampled mid-bit and written back to the terminal. The simulator runs
only while there is something to do: with no bytes waiting and the device's `busy` low, the harness
blocks on the terminal and simulated time stands still, so an idle board costs no CPU.
When a process in RFSNN_VB_LIFELINES exits, the harness returns and the simulation ends.

Speed: a Python callback per change of the rx level and per sampled tx bit, plus Verilator's model
(about 0.3-0.5 M cycles/s for the learner); a training step of the default network (86k cycles) takes
a fraction of a second, about a hundred times slower than a board at 50 MHz.
"""
from __future__ import annotations

import itertools
import os
import select
import time
import tty
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer
from cocotb.utils import get_sim_time

from rfsnn.rtl.link.uart import line_bits
from rfsnn.sim.virtual_board import Lifelines

SETTLE_BITS = 3
POLL_BITS = 64  # while the device is busy, look for new host bytes this often (in bit times)
LIFELINE_CHECK_S = 0.2  # while busy, look this often (wall-clock) whether a lifeline has gone


def line_levels(data: bytes) -> list[tuple[int, int]]:
    """The 8N1 line levels of `data` (rtl.uart.line_bits) as (level, bit count) runs: one Timer per run."""
    return [(level, len(list(run))) for level, run in itertools.groupby(line_bits(data))]


class TxSampler:
    """Reads bytes off the tx pin, as a UART receiver would, and writes them to the terminal."""

    def __init__(self, dut, fd: int, bit_ps: int):
        self.dut, self.fd, self.bit_ps = dut, fd, bit_ps
        self.active = False  # inside a byte
        self.framing_errors = 0
        self.bytes_lost = 0  # replies a client left unread until the terminal was full

    async def run(self) -> None:
        dut, bit = self.dut, self.bit_ps
        start = FallingEdge(dut.tx)
        while True:
            await start
            self.active = True
            await Timer(bit + bit // 2, unit="ps")  # the middle of data bit 0
            byte = 0
            for i in range(8):
                byte |= int(dut.tx.value) << i
                await Timer(bit, unit="ps")
            if int(dut.tx.value) != 1:  # the middle of the stop bit
                self.framing_errors += 1
                dut._log.warning("framing error on the tx pin")
            else:
                try:
                    os.write(self.fd, bytes([byte]))
                except BlockingIOError:  # nobody reads the terminal: drop the byte (a real UART would too)
                    self.bytes_lost += 1
                    if self.bytes_lost == 1:
                        dut._log.warning("the terminal is full (no client reading); dropping the device's replies")
            self.active = False


@cocotb.test()
async def serve(dut):
    pids = [int(p) for p in os.environ.get("RFSNN_VB_LIFELINES", "").split(",") if p]
    lifelines = Lifelines(pids, parent=pids[0] if pids else None)
    if lifelines.gone():
        return
    period = int(os.environ["RFSNN_VB_PERIOD_PS"])
    bit = period * int(os.environ["RFSNN_VB_DIVISOR"])
    cocotb.start_soon(Clock(dut.clk, period, unit="ps").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await Timer(4 * period, unit="ps")
    dut.rst.value = 0
    await Timer(4 * period, unit="ps")

    master, slave = os.openpty()
    tty.setraw(slave)  # bytes pass unchanged: no echo, no line editing, no CR/LF translation
    os.set_blocking(master, False)
    port_file = Path(os.environ["RFSNN_VB_PORT_FILE"])
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(os.ttyname(slave))
    tmp.replace(port_file)  # atomically: the launcher never reads half a path
    # The slave end stays open here, so the terminal survives clients opening and closing it.

    sampler = TxSampler(dut, master, bit)
    cocotb.start_soon(sampler.run())
    stats = os.environ.get("RFSNN_VB_STATS_FILE")
    reported = None
    next_check = time.monotonic() + LIFELINE_CHECK_S
    while True:
        if time.monotonic() >= next_check:
            if lifelines.gone():
                break
            next_check = time.monotonic() + LIFELINE_CHECK_S
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            data = b""
        if data:
            for level, n in line_levels(data):
                dut.rx.value = level
                await Timer(n * bit, unit="ps")
            # The last byte reaches the receive FIFO during its stop bit and `busy` rises a few clocks
            # later: give it SETTLE_BITS before `busy` may put the simulation to sleep.
            await Timer(SETTLE_BITS * bit, unit="ps")
        elif int(dut.busy.value) or sampler.active:
            await Timer(POLL_BITS * bit, unit="ps")
        else:  # nothing can happen until the host writes: wait for it with the simulation stopped
            now = get_sim_time("ps")
            if stats and now != reported:
                Path(stats + ".tmp").write_text(str(int(now)))
                Path(stats + ".tmp").replace(stats)
                reported = now
            select.select([master, *lifelines.fds], [], [], 1.0)
            if lifelines.gone():
                break
    dut._log.info("a process this board must not outlive has exited: stopping")
    port_file.unlink(missing_ok=True)  # serve() removes it too, unless it was what was killed
