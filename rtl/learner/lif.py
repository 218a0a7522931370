"""Lane-parallel LIF neuron update: the per-neuron arithmetic of one time step, for `lanes` neurons.

Combinational; the core array registers around it (membrane RAM read, current from the input or the
event accumulator, write back). Leak as a shift, so the only adder chain is U - (U >> k) + I.
"""
from __future__ import annotations

from amaranth import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

from .fixed import saturate


class LIFLanes(wiring.Component):
    def __init__(self, cfg: DeviceConfig, lanes: int):
        self.cfg, self.lanes = cfg, lanes
        word = data.ArrayLayout(signed(cfg.u_bits), lanes)
        super().__init__({
            "u": In(word),  # membrane potentials before this time step
            "cur": In(word),  # input currents of this time step
            "u_next": Out(word),
            "spike": Out(lanes),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        theta = cfg.threshold_q
        for i in range(self.lanes):
            u, cur = self.u[i], self.cur[i]
            v = saturate(u - (u >> cfg.leak_shift) + cur, cfg.u_bits)  # leak, integrate
            fire = v >= theta  # compare
            m.d.comb += [
                self.spike[i].eq(fire),
                self.u_next[i].eq(v - (fire * theta)),  # reset by subtraction (v >= theta > 0: no overflow)
            ]
        return m
