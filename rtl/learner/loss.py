"""On-chip loss: L = min(sum (y - target)^2, 2^loss_bits - 1) over the outputs of the loaded batch.

Fed one (y, target) pair per clock by a stream. Saturating each addition gives the contract's
saturate-once result because every term is non-negative.
"""
from __future__ import annotations

from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig


class LossAccumulator(wiring.Component):
    def __init__(self, cfg: DeviceConfig):
        self.cfg = cfg
        pair = data.StructLayout({"y": signed(cfg.y_bits), "target": signed(cfg.y_bits)})
        super().__init__({
            "pairs": In(stream.Signature(pair, always_ready=True)),
            "clear": In(1),  # start of a pass: the next pair starts a new sum
            "loss": Out(unsigned(cfg.loss_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        top = self.cfg.loss_max
        err = self.pairs.payload.y - self.pairs.payload.target
        total = self.loss + err * err
        with m.If(self.clear):
            m.d.sync += self.loss.eq(0)
        with m.Elif(self.pairs.valid):
            m.d.sync += self.loss.eq(Mux(total[self.cfg.loss_bits:].any(), top, total))  # total > top, without a comparator
        return m
