"""Perturbation-update arithmetic: the scalar step of a direction, and the weight write-back lanes.

- StepUnit: step = clamp(rsr(dL * gain_mant, gain_shift), -clip, clip), once per direction. It runs
  beside forward passes of tens of thousands of clocks, so it is sequential and small (it was the
  largest block of the iCE40 build): one product register P and one adder of loss_bits + 2 bits.
  P starts as {0, gain_mant}; each clock adds dL to its upper part when its lowest bit is set, and
  shifts it right one place (arithmetic). After gain_bits clocks P = dL * gain_mant exactly; the same
  adder, adding nothing, then shifts it gain_shift - 1 more places. Rounding and the clip need no
  wide logic: floor((v + 2^(s-1)) / 2^s) = floor(v' / 2) + (v' & 1) with v' = floor(v / 2^(s-1)),
  and a v' / 2 that does not fit step_bits is beyond any clip (clip < 2^(step_bits-1)).
- UpdateDelta: delta = sum_k step_k a_k b_k over every direction that counts, for one weight per
  clock: the update pass reads one factor-cache word per factor (every direction's value in it), so
  all K terms are there at once and are summed by an adder tree. |a|, |b| <= 2, so a term is the step
  shifted by 0-2 places and negated, or 0. Two forms of the same sum:
    shift-multiplexers (many directions; the ECP5 default has 32): a term is its step through two
    one-place shifters, then inverted for a negative product (ones' complement); the +1 that makes
    that the negation goes into the carry-in of one of the tree's adders (yosys merges a 1-bit
    addend into the adder's carry chain, so it costs nothing); a tree of n leaves has n - 1 adders,
    so the first term is negated exactly. A deep tree (more than 8 leaves) has a register halfway.
    multipliers (at most 4 directions, the iCE40's default): v = a b (-4..4) times the step, a chain
    of products and sums that yosys packs into the MAC16 DSPs and their adders: for the iCEBreaker's
    device 4 DSPs and about 60 LUTs instead of about 250 (yosys alone), which the UP5K does not
    have to spare; it has the DSPs (7 of 8 used).
- UpdateLanes: w <- sat_w(w - ((delta + r) >> step_frac)) for `lanes` weights per clock, where
  delta = sum_k step_k v_k (UpdateDelta) and r is the stochastic-rounding draw (or 2**(step_frac-1)
  for round half up).
"""
from __future__ import annotations

import math

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

from .fixed import saturate
from .perturb import FACTOR


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


class UpdateDelta(wiring.Component):
    """`delta` = sum over k of [counts[k]] steps[k] * a[k] * b[k] of the inputs `latency` clocks before (a
    new set of inputs every clock). Directions that do not count contribute 0 whatever their factors
    hold (a 4-state simulator reads the unwritten lanes of the factor cache as X).

    `multipliers`: the form (module docstring); None chooses it from max_directions."""

    MAX_MULTIPLIERS = 4  # up to this many directions, the products go to DSPs

    @classmethod
    def plan(cls, cfg: DeviceConfig, multipliers: bool | None = None) -> tuple[bool, int | None, int]:
        """(multipliers, the tree level after which a register sits or None, latency in clocks)."""
        K = cfg.max_directions
        multipliers = K <= cls.MAX_MULTIPLIERS if multipliers is None else multipliers
        levels = math.ceil(math.log2(K)) if K > 1 else 0
        # shift-multiplexer form: a register after half the tree's levels when it has more than three
        split = levels // 2 if not multipliers and levels > 3 else None
        return multipliers, split, 1 + (split is not None)

    def __init__(self, cfg: DeviceConfig, multipliers: bool | None = None):
        self.cfg = cfg
        self.multipliers, self.split, self.latency = self.plan(cfg, multipliers)
        K = cfg.max_directions
        super().__init__({
            "steps": In(data.ArrayLayout(signed(cfg.step_bits), K)),
            "a": In(data.ArrayLayout(FACTOR, K)),
            "b": In(data.ArrayLayout(FACTOR, K)),
            "counts": In(K),  # direction k counts for this weight
            "delta": Out(signed(delta_bits(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        K, SB = self.cfg.max_directions, self.cfg.step_bits
        leaves, carries = [], []
        for k in range(K):
            a, b, step = self.a[k], self.b[k], self.steps[k]
            # factor values -2..2 as 3-bit two's complement: odd <=> |v| = 1, 0b?10 <=> |v| = 2
            live = self.counts[k] & (a[0] | a[1]) & (b[0] | b[1])  # counts, and a, b nonzero
            two_a, two_b, neg = a[1] & ~a[0], b[1] & ~b[0], a[2] ^ b[2]
            if self.multipliers:
                mag = Mux(two_a & two_b, 4, Mux(two_a | two_b, 2, 1))
                v = Signal(signed(4), name=f"v{k}")
                m.d.comb += v.eq(Mux(live, Mux(neg, -mag, mag), 0))
                leaves.append(step * v)
                continue
            term = Signal(signed(SB + 2), name=f"term{k}")
            if k == 0:  # the one term without a carry-in to take its +1: negated exactly
                t1 = Mux(two_a, step << 1, step)
                shifted = Mux(two_b, t1 << 1, t1)  # step * |a b|
                m.d.comb += term.eq(Mux(live, Mux(neg, -shifted, shifted), 0))
            else:
                # ~(step << e) in two steps of one 4-input LUT per bit: the first shift and the inversion,
                # then the second shift (shifting in the inversion's 1) and the zero. `keep` holds ABC to
                # that split, its own mapping of the 7-input function took about 3 LUT4s and a mux per bit.
                x1 = Signal(signed(SB + 1), name=f"inv_shift{k}", attrs={"keep": 1})
                t1 = Mux(two_a, step << 1, step)
                m.d.comb += x1.eq(Mux(neg, ~t1, t1))
                m.d.comb += term.eq(Mux(live, Mux(two_b, Cat(neg, x1).as_signed(), x1), 0))
                carries.append(live & neg)
            leaves.append(term)

        if self.multipliers:  # a chain of multiply-adds, as the DSPs' adders take it
            total = leaves[0]
            for p in leaves[1:]:
                total = total + p
            m.d.sync += self.delta.eq(total)
            return m

        # The adder tree: (node value, leaves under it); each adder takes one pending +1 as carry-in.
        level, depth = [(leaf, 1) for leaf in leaves], 0
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level) - 1, 2):
                (x, nx), (y, ny) = level[i], level[i + 1]
                # `keep`: else yosys merges the tree into one many-operand sum and builds it from full
                # adders in LUTs (twice the logic of carry-chain adders on the ECP5)
                s = Signal(signed(SB + 2 + math.ceil(math.log2(nx + ny))), name=f"sum{depth + 1}_{i // 2}",
                           attrs={"keep": 1})
                m.d.comb += s.eq(x + y + carries.pop())
                nxt.append((s, nx + ny))
            if len(level) % 2:
                nxt.append(level[-1])
            level, depth = nxt, depth + 1
            if depth == self.split:  # the pipeline register: the partial sums and the +1s still pending
                regs = [(Signal.like(x, name=f"{x.name}_q"), n) for x, n in level]
                m.d.sync += [r.eq(x) for (r, _), (x, _) in zip(regs, level)]
                pending = [Signal(name=f"carry{j}_q") for j in range(len(carries))]
                m.d.sync += [r.eq(c) for r, c in zip(pending, carries)]
                level, carries = regs, pending
        assert not carries
        m.d.sync += self.delta.eq(level[0][0])
        return m
