"""The device: UART pins in and out, the learner inside (docs/rtl.md, docs/protocol.md).

    rx pin -> UARTRx -> SLIPDecoder -> Dispatcher <-> Learner
    tx pin <- UARTTx <- SLIPEncoder <-------'

Everything a board needs besides its clock and pins; the board files (issue 5) wrap this.
"""
from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.config import DeviceConfig

from .dispatcher import Dispatcher
from .framing import SLIPDecoder, SLIPEncoder
from .learner import Learner
from .uart import UART


class DeviceTop(wiring.Component):
    def __init__(self, cfg: DeviceConfig, divisor: int, neuron_lanes: int = 1, sample_lanes: int = 8):
        self.cfg, self.divisor = cfg, divisor
        self.neuron_lanes, self.sample_lanes = neuron_lanes, sample_lanes
        Learner.check_lanes(cfg, neuron_lanes, sample_lanes)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "link_errors": Out(2)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(self.divisor)
        m.submodules.decoder = dec = SLIPDecoder()
        m.submodules.dispatcher = disp = Dispatcher(self.cfg)
        m.submodules.learner = learner = Learner(self.cfg, self.neuron_lanes, self.sample_lanes)
        m.submodules.encoder = enc = SLIPEncoder()
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx),
                     self.link_errors.eq(uart.framing_error | (uart.overrun << 1))]
        wiring.connect(m, uart.rx_bytes, dec.bytes)
        wiring.connect(m, dec.payload, disp.payload)
        wiring.connect(m, dec.frame, disp.frame)
        wiring.connect(m, disp.cmd, learner.cmd)
        wiring.connect(m, learner.rsp, disp.rsp)
        wiring.connect(m, disp.reply, enc.payload)
        wiring.connect(m, enc.bytes, uart.tx_bytes)
        return m
