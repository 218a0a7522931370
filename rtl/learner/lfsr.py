"""LFSR noise generator: the contract's noise stream (docs/fixed-point.md section 4), `lanes` bits per clock.

Leap-forward: the register is the contract's Galois LFSR, but each clock it advances `lanes` steps at
once, and the `lanes` stream bits of those steps are parities of the current state under fixed masks.
Both the masks and the lanes-step transition are computed here at elaboration from the golden model's
own tables (rfsnn.sim.contract.lfsr), so the gateware cannot drift from the contract. Cost: one XOR tree per
output bit and per state bit, no extra state.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract import lfsr as model
from rfsnn.sim.contract.config import MAXIMAL_TAPS, ZERO_SEED_SUBSTITUTE


def leap_matrix(width: int, taps: int, lanes: int) -> list[int]:
    """rows[i]: mask such that bit i of the state after `lanes` clocks = parity(rows[i] & state)."""
    cols = []  # image of each unit state e_j after `lanes` clocks
    for j in range(width):
        s = 1 << j
        for _ in range(lanes):
            _, s = model.step(s, taps)
        cols.append(s)
    return [sum(((cols[j] >> i) & 1) << j for j in range(width)) for i in range(width)]


class NoiseLFSR(wiring.Component):
    """Seedable, replayable noise source.

    - `seed` / `load`: on a clock with `load` high the register takes `seed` (a zero seed is replaced by
      the contract's constant, so the register never freezes). Replay = load the same seed again.
    - `bits`: a stream whose valid is always high; payload bit i is stream bit n + i, where n counts the bits consumed
      since the last load. A transfer (`ready` high) consumes all `lanes` bits.
    """

    def __init__(self, width: int = 32, taps: int | None = None, lanes: int = 1):
        self.width, self.lanes = width, lanes
        self.taps = taps if taps is not None else MAXIMAL_TAPS[width]
        super().__init__({
            "seed": In(width),
            "load": In(1),
            "bits": Out(stream.Signature(unsigned(lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        mask = (1 << self.width) - 1
        state = Signal(self.width, init=model.guard_seed(0, self.width))
        out_masks = model.output_masks(self.lanes, self.width, self.taps)
        leap = leap_matrix(self.width, self.taps, self.lanes)

        for i, mk in enumerate(out_masks):
            m.d.comb += self.bits.payload[i].eq((state & int(mk)).xor())
        m.d.comb += self.bits.valid.eq(1)  # never empty (a constant valid could not be a top-level port)

        with m.If(self.load):
            substitute = ZERO_SEED_SUBSTITUTE & mask or 1
            m.d.sync += state.eq(Mux(self.seed == 0, substitute, self.seed))
        with m.Elif(self.bits.ready):
            for i, row in enumerate(leap):
                m.d.sync += state[i].eq((state & row).xor())
        return m
