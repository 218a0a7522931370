"""Perturbation-update arithmetic: the scalar step of a direction, and the weight write-back lanes.

- StepUnit: step = clamp(rsr(dL * gain_mant, gain_shift), -clip, clip), once per direction. It runs
  beside forward passes of tens of thousands of clocks, so it is sequential and small (it was the
  largest block of the iCE40 build): one product register P and one adder of loss_bits + 2 bits.
  P starts as {0, gain_mant}; each clock adds dL to its upper part when its lowest bit is set, and
  shifts it right one place (arithmetic). After gain_bits clocks P = dL * gain_mant exactly; the same
  adder, adding nothing, then shifts it gain_shift - 1 more places. Rounding and the clip need no
  wide logic: floor((v + 2^(s-1)) / 2^s) = floor(v' / 2) + (v' & 1) with v' = floor(v / 2^(s-1)),
  and a v' / 2 that does not fit step_bits is beyond any clip (clip < 2^(step_bits-1)).
- UpdateLanes: w <- sat_w(w - ((delta + r) >> step_frac)) for `lanes` weights per clock, where
  delta = sum_k step_k v_k was accumulated from the step's direction factors and r is the
  stochastic-rounding draw (or 2**(step_frac-1) for round half up).
"""
from __future__ import annotations

import math

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

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
        G, SB = cfg.gain_bits, cfg.step_bits
        prod = Signal(signed(cfg.loss_bits + 1 + G))  # the exact product's width
        hi = prod[G:].as_signed()
        add = Signal()  # this clock adds loss_diff (multiply phase and the mantissa bit set)
        total = Signal(signed(cfg.loss_bits + 2))
        m.d.comb += total.eq(hi + Mux(add, self.loss_diff, 0))
        left = Signal(range(G + 64))  # shifts still to do: G multiply steps, then gain_shift - 1
        mult = Signal(range(G + 1))  # multiply steps still to do
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [prod.eq(self.gain_mant), left.eq(G + self.gain_shift - 1), mult.eq(G)]
                    m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.comb += [self.busy.eq(1), add.eq((mult != 0) & prod[0])]
                with m.If(left == 0):
                    m.next = "ROUND"
                with m.Else():
                    m.d.sync += [prod.eq(Cat(prod[1:G], total)), left.eq(left - 1)]
                    with m.If(mult != 0):
                        m.d.sync += mult.eq(mult - 1)
            with m.State("ROUND"):
                m.d.comb += self.busy.eq(1)
                half = prod[1:]  # floor(v' / 2)
                fits = (half[SB - 1:] == 0) | (half[SB - 1:] == (1 << (half.shape().width - SB + 1)) - 1)
                near = Signal(signed(SB + 1))
                m.d.comb += near.eq(half[:SB].as_signed() + prod[0])
                clip = Cat(self.clip, C(0, 2)).as_signed()
                with m.If(~fits):
                    m.d.sync += self.step.eq(Mux(half[-1], -clip, clip))
                with m.Else():
                    m.d.sync += self.step.eq(Mux(near > clip, clip, Mux(near < -clip, -clip, near)))
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
