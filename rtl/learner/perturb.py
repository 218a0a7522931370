"""Perturbed weight read: w' = sat_w(w + s * a_i * b_j), formed as each weight word is read.

The direction is rank-one (docs/fixed-point.md section 5): a_i belongs to the output neuron of the
lane, b_j to the presynaptic neuron whose row is being read, s is +sigma or -sigma for the pass. So
nothing perturbed is stored: a word of `lanes` weights is perturbed on its way to the accumulators.
Factor values are in [-2, 2] (rademacher uses +/-1); a_i * b_j * s is a shift-and-add, not a DSP.
"""
from __future__ import annotations

from amaranth import Module, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

from .fixed import saturate

FACTOR = signed(3)  # noise factor values -2..2


class PerturbedRead(wiring.Component):
    def __init__(self, cfg: DeviceConfig, lanes: int):
        self.cfg, self.lanes = cfg, lanes
        word = data.ArrayLayout(signed(cfg.w_bits), lanes)
        super().__init__({
            "w": In(word),
            "a": In(data.ArrayLayout(FACTOR, lanes)),  # per output neuron (lane)
            "b": In(FACTOR),  # of the row being read
            "signed_sigma": In(signed(cfg.w_bits)),  # +sigma, -sigma, or 0 for an unperturbed pass
            "w_pert": Out(word),
        })

    def elaborate(self, platform):
        m = Module()
        # |a|, |b| are 0, 1 or 2, so s * a * b is 0 or +-s shifted by 0-2 places: a multiplexer, not a
        # multiplier (yosys would otherwise give it a DSP, in series with the accumulator's).
        b_zero, b_two, b_neg = self.b == 0, (self.b == 2) | (self.b == -2), self.b < 0
        s = self.signed_sigma
        for i in range(self.lanes):
            a = self.a[i]
            shifted = Mux((a == 2) | (a == -2), Mux(b_two, s << 2, s << 1), Mux(b_two, s << 1, s))
            # An unperturbed pass (s = 0) leaves w alone whatever the factors hold: with one neuron lane they
            # come from the factor cache, which an INFER before any TRAIN_STEP reads unwritten.
            nudge = Mux((a == 0) | b_zero | (s == 0), 0, Mux((a < 0) ^ b_neg, -shifted, shifted))
            m.d.comb += self.w_pert[i].eq(saturate(self.w[i] + nudge, self.cfg.w_bits))
        return m
