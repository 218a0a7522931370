"""LFSR noise generator: the contract's noise stream (docs/fixed-point.md section 4), `lanes` bits per clock.

Leap-forward: the register is the contract's Galois LFSR, but each clock it advances `lanes` steps at
once, and the `lanes` stream bits of those steps are parities of the current state under fixed masks.
Both the masks and the lanes-step transition are computed here at elaboration from the golden model's
own tables (rfsnn.sim.contract.lfsr), so the gateware cannot drift from the contract. Cost: one XOR tree per
output bit and per state bit, no extra state.

A second rate (`wide_lanes`): the same register also offers the next `wide_lanes` stream bits on
`wide_bits`, and a transfer there advances it `wide_lanes` steps instead: one register with two
next-state functions. The learner draws direction factors one bit per clock and then takes the
stochastic-rounding bits step_frac per clock (one weight's group per clock in the update pass).
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
    - `wide_bits` (only with `wide_lanes` > 0): the same for the next `wide_lanes` bits; a transfer consumes
      them. Take from one of the two streams per clock (if both are ready, `wide_bits` wins).
    """

    def __init__(self, width: int = 32, taps: int | None = None, lanes: int = 1, wide_lanes: int = 0):
        self.width, self.lanes, self.wide_lanes = width, lanes, wide_lanes
        self.taps = taps if taps is not None else MAXIMAL_TAPS[width]
        super().__init__({
            "seed": In(width),
            "load": In(1),
            "bits": Out(stream.Signature(unsigned(lanes))),
            **({"wide_bits": Out(stream.Signature(unsigned(wide_lanes)))} if wide_lanes else {}),
        })

    def elaborate(self, platform):
        m = Module()
        mask = (1 << self.width) - 1
        state = Signal(self.width, init=model.guard_seed(0, self.width))
        rates = [(self.bits, self.lanes)] + ([(self.wide_bits, self.wide_lanes)] if self.wide_lanes else [])
        for port, lanes in rates:
            for i, mk in enumerate(model.output_masks(lanes, self.width, self.taps)):
                m.d.comb += port.payload[i].eq((state & int(mk)).xor())
            m.d.comb += port.valid.eq(1)  # never empty (a constant valid could not be a top-level port)

        with m.If(self.load):
            substitute = ZERO_SEED_SUBSTITUTE & mask or 1
            m.d.sync += state.eq(Mux(self.seed == 0, substitute, self.seed))
        for port, lanes in reversed(rates):  # the wide rate first
            with m.Elif(port.ready):
                for i, row in enumerate(leap_matrix(self.width, self.taps, lanes)):
                    m.d.sync += state[i].eq((state & row).xor())
        return m
