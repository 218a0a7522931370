"""The device: UART pins in and out, the learner inside (docs/rtl.md, docs/protocol.md). DeviceCore is
the same device behind byte streams, for links other than a UART (USB CDC-ACM on the OrangeCrab).

    rx pin -> UARTRx -> receive FIFO -> SLIPDecoder -> Dispatcher <-> Learner
    tx pin <- UARTTx <- SLIPEncoder <-------------------------'

The receive FIFO holds the bytes that arrive while the dispatcher works on an earlier frame (a training
step takes milliseconds), so a host may send its next frames without waiting for the reply: the wire
time of the next batch then overlaps the device's compute (docs/protocol.md, "Pipelining"). A host
keeps at most `rx_fifo_depth` bytes in flight; past that the UART reports an overrun, the damaged frame
fails its CRC and is answered BAD_CRC, and the host resends.

`busy` is high while anything received is still being worked on or a reply is still going out: a
board can show it on an LED, and the virtual board's harness sleeps while it is low.

Everything a board needs besides its clock and pins; the board files (issue 5) wrap this.
"""
from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.contract.protocol import RX_WINDOW

from .link.dispatcher import Dispatcher
from .link.framing import SLIPDecoder, SLIPEncoder
from .learner import Learner
from .link.uart import UART


# The receive FIFO is the device's receive window (bytes of frames a host may have in flight): one
# iCE40 block RAM, two frames of the longest kind.
RX_FIFO_DEPTH = RX_WINDOW


class DeviceCore(wiring.Component):
    """The device behind a byte stream each way: receive FIFO, SLIP framing, dispatcher, learner. A UART
    (DeviceTop) or a USB CDC-ACM port (the OrangeCrab's board top) carries the bytes.

    `busy`: something received is still being worked on, or reply bytes are waiting to be taken."""

    def __init__(self, cfg: DeviceConfig, neuron_lanes: int = 1, sample_lanes: int = 8,
                 rx_fifo_depth: int = RX_FIFO_DEPTH, serial_crc: bool = False):
        self.cfg, self.rx_fifo_depth, self.serial_crc = cfg, rx_fifo_depth, serial_crc
        self.neuron_lanes, self.sample_lanes = neuron_lanes, sample_lanes
        Learner.check_lanes(cfg, neuron_lanes, sample_lanes)
        super().__init__({"rx_bytes": In(stream.Signature(8)), "tx_bytes": Out(stream.Signature(8)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx_fifo = rx_fifo = SyncFIFOBuffered(width=8, depth=self.rx_fifo_depth)
        m.submodules.decoder = dec = SLIPDecoder(serial_crc=self.serial_crc)
        m.submodules.dispatcher = disp = Dispatcher(self.cfg)
        m.submodules.learner = learner = Learner(self.cfg, self.neuron_lanes, self.sample_lanes)
        m.submodules.encoder = enc = SLIPEncoder(serial_crc=self.serial_crc)
        wiring.connect(m, wiring.flipped(self.rx_bytes), rx_fifo.w_stream)
        wiring.connect(m, rx_fifo.r_stream, dec.bytes)
        m.d.comb += self.busy.eq(rx_fifo.r_rdy | ~disp.idle | enc.bytes.valid)
        wiring.connect(m, dec.payload, disp.payload)
        wiring.connect(m, dec.frame, disp.frame)
        wiring.connect(m, disp.cmd, learner.cmd)
        wiring.connect(m, learner.rsp, disp.rsp)
        wiring.connect(m, disp.reply, enc.payload)
        wiring.connect(m, enc.bytes, wiring.flipped(self.tx_bytes))
        return m


class DeviceTop(wiring.Component):
    def __init__(self, cfg: DeviceConfig, divisor: int, neuron_lanes: int = 1, sample_lanes: int = 8,
                 rx_fifo_depth: int = RX_FIFO_DEPTH, serial_crc: bool = False):
        self.cfg, self.divisor, self.rx_fifo_depth, self.serial_crc = cfg, divisor, rx_fifo_depth, serial_crc
        self.neuron_lanes, self.sample_lanes = neuron_lanes, sample_lanes
        Learner.check_lanes(cfg, neuron_lanes, sample_lanes)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "link_errors": Out(2), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(self.divisor)
        m.submodules.core = core = DeviceCore(self.cfg, self.neuron_lanes, self.sample_lanes, self.rx_fifo_depth,
                                              self.serial_crc)
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx),
                     self.link_errors.eq(uart.framing_error | (uart.overrun << 1)),
                     self.busy.eq(core.busy | ~uart.tx_bytes.ready)]
        wiring.connect(m, uart.rx_bytes, core.rx_bytes)
        wiring.connect(m, core.tx_bytes, uart.tx_bytes)
        return m
