"""The gateware as a host transport, in process: host.link.Device talks to rtl.top.DeviceCore running in
Amaranth's simulator, byte stream for byte stream, with no Verilog build.

`SimulatedCore(cfg, ...)` has the transport interface (`write(bytes)`, `read(timeout) -> bytes`), so
the real host driver, with its pipelining, resends and recovery, runs against the real receive FIFO,
framing, dispatcher and learner (Glasgow runs its host code against simulated gateware the same way).
Time is simulated: `read(timeout)` advances the simulation by up to `timeout` seconds of the device's
clock, and returns once reply bytes have come out, or at once when the device is idle with nothing
left to deliver (no byte can come then, so waiting longer would only cost simulation time). The host's
own deadlines are on the wall clock, as with a board.

The simulator is slow (thousands of cycles per second), so use small networks; the virtual board
(sim.virtual_board) runs the same design at full size on Verilator.
"""
from __future__ import annotations

from .contract.config import DeviceConfig

CHUNK_CYCLES = 64  # the simulation runs in slices this long between checks for reply bytes


class SimulatedCore:
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int = 1, sample_lanes: int = 2, clock_hz: float = 15e6):
        from amaranth.sim import Simulator

        from rfsnn.rtl.top import DeviceCore

        self.clock_hz = clock_hz
        self.dut = DeviceCore(cfg, neuron_lanes, sample_lanes)
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1 / clock_hz)
        self.sim.add_testbench(self._pump, background=True)
        self._to_device = bytearray()
        self._from_device = bytearray()
        self._busy = False
        self.cycles = 0

    async def _pump(self, ctx):
        """Feed the device's byte input from the host's queue and collect its output, one byte per clock
        each way at most (as a UART or USB FIFO would, only faster)."""
        rx, tx = self.dut.rx_bytes, self.dut.tx_bytes
        ctx.set(tx.ready, 1)
        while True:
            offering = bool(self._to_device)
            ctx.set(rx.valid, offering)
            if offering:
                ctx.set(rx.payload, self._to_device[0])
            _, _, taken, out_valid, out_byte, busy = await ctx.tick().sample(rx.ready, tx.valid, tx.payload,
                                                                                self.dut.busy)
            self.cycles += 1
            if offering and taken:
                del self._to_device[0]
            if out_valid:
                self._from_device.append(out_byte)
            self._busy = bool(busy)

    def _run(self, cycles: int) -> None:
        self.sim.run_until((self.cycles + cycles) / self.clock_hz)

    def write(self, data: bytes) -> None:
        self._to_device += data

    def read(self, timeout: float) -> bytes:
        """Advance the simulation until the device has sent bytes and paused (a reply ends when the
        encoder stops: it sends a frame's bytes back to back), or is idle with nothing queued, or
        `timeout` seconds of its clock have passed."""
        budget, spent = max(1, int(timeout * self.clock_hz)), 0
        while spent < budget:
            before = len(self._from_device)
            step = min(CHUNK_CYCLES, budget - spent)
            self._run(step)
            spent += step
            if self._from_device and len(self._from_device) == before:
                break  # bytes came and the output paused
            if not self._from_device and not self._to_device and not self._busy:
                break  # idle with nothing queued: no reply can come
        out, self._from_device = bytes(self._from_device), bytearray()
        return out
