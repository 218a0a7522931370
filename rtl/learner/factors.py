"""Direction factors: draws a (per output neuron) and b (per input, bias last) of one direction from the
noise stream, in the contract's order (docs/fixed-point.md section 5), into registers that the
perturbed-read lanes index.

`load` reseeds the stream (start of a step, or its replay for the update pass); each `start` then draws
the next direction: every layer in ascending order (global scope) or only `layer` (layer-wise). Values
are one bit (rademacher: 1 - 2 bit) or four bits (gauss4: popcount - 2), one stream bit per clock, so
a direction of the 2-64-1 network takes 133 clocks (532 for gauss4), small beside its forward passes.

Each value drawn is also announced on `drawn_*` (its flat index: layer by layer, a then b), so the
learner can keep the K directions of a step in its factor cache. A learner with one neuron lane reads
the factors of its passes from that cache too, and builds this block with `registers=False`: the
registers, their write decoder and their read multiplexers cost the iCE40 about 270 logic cells.
While idle, the rest of the stream is offered on `rest`, step_frac bits per transfer, the first in
bit 0: the stochastic-rounding bits, which the contract places after every direction, one group per
weight. The update pass takes one group per clock, so the LFSR has a second, step_frac-step next-state
function for them (NoiseLFSR's `wide_bits`); the draws keep the one-bit one.
"""
from __future__ import annotations

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

from .lfsr import NoiseLFSR
from .perturb import FACTOR


class DirectionFactors(wiring.Component):
    @staticmethod
    def factors_per_direction(cfg: DeviceConfig) -> int:
        return sum(o + i + 1 for o, i in cfg.layer_shapes)

    @staticmethod
    def pass_buffer_half(cfg: DeviceConfig, k):
        """First address of direction k's half of the pass buffer (memories.py: two halves by k's parity)."""
        return Mux(k[0], DirectionFactors.factors_per_direction(cfg), 0)

    @staticmethod
    def slot_starts(cfg: DeviceConfig) -> list[int]:
        """Flat index of a_l[0] for each layer l; b_l[j] is at start + n_out + j."""
        starts, pos = [], 0
        for o, i in cfg.layer_shapes:
            starts.append(pos)
            pos += o + i + 1
        return starts

    def __init__(self, cfg: DeviceConfig, registers: bool = True):
        self.cfg, self.registers = cfg, registers
        ports = {
            "seed": In(cfg.lfsr_width),
            "load": In(1),
            "start": In(1),
            "gauss4": In(1),  # 0: rademacher
            "layerwise": In(1),
            "layer": In(range(cfg.n_layers)),
            "busy": Out(1),
            "drawn_valid": Out(1),
            "drawn_index": Out(range(self.factors_per_direction(cfg))),
            "drawn_value": Out(FACTOR),
            "rest": Out(stream.Signature(cfg.step_frac)),  # the rounding bits, one weight's group per transfer
        }
        for l, (o, i) in enumerate(cfg.layer_shapes if registers else []):
            ports[f"a{l}"] = Out(data.ArrayLayout(FACTOR, o))
            ports[f"b{l}"] = Out(data.ArrayLayout(FACTOR, i + 1))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.lfsr = lfsr = NoiseLFSR(cfg.lfsr_width, cfg.lfsr_taps, lanes=1, wide_lanes=cfg.step_frac)
        m.d.comb += [lfsr.seed.eq(self.seed), lfsr.load.eq(self.load)]

        # One flat list of factor registers in stream order per layer: a then b.
        slots = []  # (layer, first index into the flat list, count)
        regs = []
        for l, (o, i) in enumerate(cfg.layer_shapes):
            slots.append((l, sum(s[2] for s in slots), o + i + 1))
            if self.registers:
                regs += [getattr(self, f"a{l}")[n] for n in range(o)]
                regs += [getattr(self, f"b{l}")[n] for n in range(i + 1)]
        n_factors = self.factors_per_direction(cfg)

        layer = Signal(range(cfg.n_layers + 1))
        index = Signal(range(n_factors + 1))  # position in the flat list
        last = Signal(range(n_factors + 1))  # one past this layer's last factor
        bit_no = Signal(2)  # gauss4: which of the 4 bits
        ones = Signal(3)  # gauss4: bits set so far
        single = Signal()  # layer-wise: stop after one layer

        firsts = Array([s[1] for s in slots] + [n_factors])
        ends = Array([s[1] + s[2] for s in slots] + [n_factors])

        bit = lfsr.bits.payload[0]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.rest.valid.eq(1), self.rest.payload.eq(lfsr.wide_bits.payload),
                             lfsr.wide_bits.ready.eq(self.rest.ready)]
                with m.If(self.start & ~self.load):
                    start_layer = Mux(self.layerwise, self.layer, 0)
                    m.d.sync += [
                        single.eq(self.layerwise),
                        layer.eq(start_layer),
                        index.eq(firsts[start_layer]),
                        last.eq(ends[start_layer]),
                        bit_no.eq(0),
                        ones.eq(0),
                    ]
                    m.next = "DRAW"
            with m.State("DRAW"):
                m.d.comb += [self.busy.eq(1), lfsr.bits.ready.eq(1)]
                value_done = Signal()
                with m.If(self.gauss4):
                    m.d.comb += value_done.eq(bit_no == 3)
                    m.d.sync += [bit_no.eq(bit_no + 1), ones.eq(ones + bit)]
                    m.d.comb += self.drawn_value.eq((ones + bit) - 2)
                    with m.If(value_done):
                        m.d.sync += ones.eq(0)
                with m.Else():
                    m.d.comb += [value_done.eq(1), self.drawn_value.eq(1 - 2 * bit)]
                m.d.comb += [self.drawn_valid.eq(value_done), self.drawn_index.eq(index)]
                with m.If(value_done):
                    m.d.sync += index.eq(index + 1)
                    if self.registers:
                        m.d.sync += Array(regs)[index].eq(self.drawn_value)
                    with m.If(index + 1 == last):
                        with m.If(single | (layer + 1 == cfg.n_layers)):
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += [layer.eq(layer + 1), last.eq(ends[layer + 1])]
        return m

