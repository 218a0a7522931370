"""The batch drawer: one step's batch of TRAIN_STEPS, drawn from the training set (docs/fixed-point.md
section 7).

The batch stream is a NoiseLFSR of the noise generator's width and taps with a lane per word bit: one
32-bit stream word per clock. A draw takes B + 1 words: word 0 is the step's noise seed (`draw.seed`,
for the front end's SEED register), word 1 + b picks set sample ((w >> 8) * n) >> 24 (n = SAMPLES) for
batch slot b, one sample per clock through four stages:
  word   the word's top DRAW_BITS bits, registered (the multiplier's input)
  scale  times n on a DSP multiplier, registered
  read   the product's top bits address the set RAMs
  write  the sample's words, one clock later, into the x and t RAMs at slot b
so a draw takes B + 4 clocks after `start`; `done` marks its last write. SET DATA_SEED loads the stream
(`draw.load`), which then stands where the last draw left it.
"""
from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DRAW_BITS, DeviceConfig
from rfsnn.sim.contract.streams import WORD_BITS

from .lfsr import NoiseLFSR
from .memories import MemoryMap


class DrawControl(wiring.Signature):
    """The drawer, from the front end, which runs TRAIN_STEPS."""

    def __init__(self):
        super().__init__({
            "load": Out(1), "data_seed": Out(32),  # SET DATA_SEED: the batch stream's new state
            "start": Out(1),  # draw the next step's batch (one clock, the drawer idle)
            "seed": In(stream.Signature(unsigned(WORD_BITS), always_ready=True)),  # word 0: the step's SEED
            "done": In(1),  # the draw's last clock: the batch RAMs hold the batch from the next
        })


class BatchDrawer(wiring.Component):
    def __init__(self, cfg: DeviceConfig, memory_map: MemoryMap):
        self.cfg = cfg
        super().__init__({
            "draw": In(DrawControl()),
            "samples": In(range(cfg.max_samples + 1)),
            "batch": In(range(cfg.max_batch + 1)),
            "busy": Out(1),  # the drawer has the x and t RAMs' write ports
            **memory_map.ports("set_x_rd", "set_t_rd", "x_wr", "t_wr"),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, draw = self.cfg, self.draw
        m.submodules.stream = lfsr = NoiseLFSR(cfg.lfsr_width, cfg.lfsr_taps, lanes=WORD_BITS)
        m.d.comb += [lfsr.seed.eq(draw.data_seed), lfsr.load.eq(draw.load)]
        word = lfsr.bits.payload

        words = Signal(range(cfg.max_batch + 1))  # taken so far in this draw
        drawing = Signal()
        with m.If(draw.start):
            m.d.sync += [drawing.eq(1), words.eq(0)]
        with m.If(drawing):
            m.d.comb += lfsr.bits.ready.eq(1)
            m.d.sync += words.eq(words + 1)
            with m.If(words == self.batch):
                m.d.sync += drawing.eq(0)
        m.d.comb += [draw.seed.valid.eq(drawing & (words == 0)), draw.seed.payload.eq(word)]

        slot_shape = range(cfg.max_batch)
        top, slot1, valid1 = Signal(DRAW_BITS), Signal(slot_shape), Signal()
        m.d.sync += [top.eq(word[WORD_BITS - DRAW_BITS:]), slot1.eq(words - 1), valid1.eq(drawing & (words != 0))]
        product, slot2, valid2 = Signal(DRAW_BITS + len(self.samples)), Signal(slot_shape), Signal()
        m.d.sync += [product.eq(top * self.samples), slot2.eq(slot1), valid2.eq(valid1)]
        m.d.comb += [self.set_x_rd.addr.eq(product[DRAW_BITS:]), self.set_t_rd.addr.eq(product[DRAW_BITS:])]
        slot3, valid3 = Signal(slot_shape), Signal()
        m.d.sync += [slot3.eq(slot2), valid3.eq(valid2)]
        with m.If(valid3):
            for wr, rd in ((self.x_wr, self.set_x_rd), (self.t_wr, self.set_t_rd)):
                m.d.comb += [wr.addr.eq(slot3), wr.en.eq((1 << len(wr.en)) - 1), wr.data.eq(rd.data)]
        m.d.comb += [self.busy.eq(drawing | valid1 | valid2 | valid3),
                     draw.done.eq(valid3 & ~(drawing | valid1 | valid2))]
        return m
