"""Perturbation-update arithmetic: the scalar step of a direction, and the weight write-back lanes.

- StepUnit: step = clamp(rsr(dL * gain_mant, gain_shift), -clip, clip), once per direction. Written
  here as one combinational multiply and barrel shift (the reference form); the core can time-share a
  multiplier since it runs once per direction, not per weight.
- UpdateLanes: w <- sat_w(w - ((delta + r) >> step_frac)) for `lanes` weights per clock, where
  delta = sum_k step_k v_k was accumulated from the step's direction factors and r is the
  stochastic-rounding draw (or 2**(step_frac-1) for round half up).
"""
from __future__ import annotations

import math

from amaranth import Const, Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.config import DeviceConfig

from .fixed import saturate


def delta_bits(cfg: DeviceConfig) -> int:
    """Signed width of sum_k step_k v_k: K <= max_directions steps times |v| <= 4 (gauss4)."""
    return cfg.step_bits + 2 + math.ceil(math.log2(cfg.max_directions))


class StepUnit(wiring.Component):
    def __init__(self, cfg: DeviceConfig):
        self.cfg = cfg
        super().__init__({
            "loss_diff": In(signed(cfg.loss_bits + 1)),
            "gain_mant": In(unsigned(cfg.gain_bits)),
            "gain_shift": In(unsigned(6)),  # 1..63
            "clip": In(unsigned(cfg.step_bits - 1)),
            "step": Out(signed(cfg.step_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        product = self.loss_diff * self.gain_mant  # signed, loss_bits + 1 + gain_bits wide
        half = Const(1, 64) << (self.gain_shift - 1)[:6]  # gain_shift >= 1 (StepParams.validate)
        rounded = (product + half) >> self.gain_shift
        m.d.comb += self.step.eq(Mux(rounded > self.clip, self.clip, Mux(rounded < -self.clip, -self.clip, rounded)))
        return m


class UpdateLanes(wiring.Component):
    def __init__(self, cfg: DeviceConfig, lanes: int):
        self.cfg, self.lanes = cfg, lanes
        super().__init__({
            "w": In(data.ArrayLayout(signed(cfg.w_bits), lanes)),
            "delta": In(data.ArrayLayout(signed(delta_bits(cfg)), lanes)),
            "rnd": In(data.ArrayLayout(unsigned(cfg.step_frac), lanes)),
            "w_new": Out(data.ArrayLayout(signed(cfg.w_bits), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        for i in range(self.lanes):
            moved = (self.delta[i] + self.rnd[i]) >> self.cfg.step_frac
            m.d.comb += self.w_new[i].eq(saturate(self.w[i] - moved, self.cfg.w_bits))
        return m
