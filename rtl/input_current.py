"""Input-layer current: I = sat_u(rsr(sum_j w_j x_j, x_frac) + b) for one neuron and one sample.

Computed once per sample (direct coding), so it is the only multiply in the forward pass besides the
readout; `n0` products in parallel here (n0 is 1 or 2 for the tasks), an exact sum, one rounding, one
saturation, as the contract orders them.
"""
from __future__ import annotations

from amaranth import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.config import DeviceConfig

from .fixed import rshift_round, saturate


class InputCurrent(wiring.Component):
    def __init__(self, cfg: DeviceConfig):
        self.cfg = cfg
        n0 = cfg.layers[0]
        super().__init__({
            "w": In(data.ArrayLayout(signed(cfg.w_bits), n0)),
            "bias": In(signed(cfg.w_bits)),
            "x": In(data.ArrayLayout(signed(cfg.x_bits), n0)),
            "current": Out(signed(cfg.u_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        acc = sum(self.w[j] * self.x[j] for j in range(cfg.layers[0]))
        m.d.comb += self.current.eq(saturate(rshift_round(acc, cfg.x_frac) + self.bias, cfg.u_bits))
        return m
