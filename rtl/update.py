"""Perturbation-update arithmetic: the scalar step of a direction, and the weight write-back lanes.

- StepUnit: step = clamp(rsr(dL * gain_mant, gain_shift), -clip, clip), once per direction. It runs
  once per direction, beside forward passes of tens of thousands of clocks, so it is sequential:
  shift-and-add over the gain_bits of the mantissa, then one arithmetic shift per clock, then the
  rounding. About gain_bits + gain_shift + 2 clocks; no multiplier, no barrel shifter.
  Rounding in two parts is exact: floor((v + 2^(s-1)) / 2^s) = floor((floor(v / 2^(s-1)) + 1) / 2).
- UpdateLanes: w <- sat_w(w - ((delta + r) >> step_frac)) for `lanes` weights per clock, where
  delta = sum_k step_k v_k was accumulated from the step's direction factors and r is the
  stochastic-rounding draw (or 2**(step_frac-1) for round half up).
"""
from __future__ import annotations

import math

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.config import DeviceConfig

from .fixed import saturate


def delta_bits(cfg: DeviceConfig) -> int:
    """Signed width of sum_k step_k v_k: K <= max_directions steps times |v| <= 4 (gauss4)."""
    return cfg.step_bits + 2 + math.ceil(math.log2(cfg.max_directions))


class StepUnit(wiring.Component):
    """`start` (one clock) takes the inputs; `busy` is high until `step` holds the result."""

    def __init__(self, cfg: DeviceConfig):
        self.cfg = cfg
        super().__init__({
            "loss_diff": In(signed(cfg.loss_bits + 1)),
            "gain_mant": In(unsigned(cfg.gain_bits)),
            "gain_shift": In(unsigned(6)),  # 1..63
            "clip": In(unsigned(cfg.step_bits - 1)),
            "start": In(1),
            "busy": Out(1),
            "step": Out(signed(cfg.step_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        width = cfg.loss_bits + 1 + cfg.gain_bits  # the exact product
        acc = Signal(signed(width))
        addend = Signal(signed(width))  # loss_diff * 2^i
        mant = Signal(cfg.gain_bits)  # mantissa bits still to use
        shifts = Signal(6)  # arithmetic shifts still to do (gain_shift - 1 of them)
        clip = Signal.like(self.clip)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [acc.eq(0), addend.eq(self.loss_diff), mant.eq(self.gain_mant),
                                 shifts.eq(self.gain_shift - 1), clip.eq(self.clip)]
                    m.next = "MULTIPLY"
            with m.State("MULTIPLY"):
                m.d.comb += self.busy.eq(1)
                with m.If(mant[0]):
                    m.d.sync += acc.eq(acc + addend)
                m.d.sync += [addend.eq(addend << 1), mant.eq(mant >> 1)]
                with m.If((mant >> 1) == 0):
                    m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.comb += self.busy.eq(1)
                with m.If(shifts == 0):
                    m.next = "ROUND"
                with m.Else():
                    m.d.sync += [acc.eq(acc >> 1), shifts.eq(shifts - 1)]
            with m.State("ROUND"):
                m.d.comb += self.busy.eq(1)
                rounded = (acc + 1) >> 1
                m.d.sync += self.step.eq(Mux(rounded > clip, clip, Mux(rounded < -clip, -clip, rounded)))
                m.next = "IDLE"
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
