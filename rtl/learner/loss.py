"""On-chip loss: L = min(sum (y - target)^2, 2^loss_bits - 1) over the outputs of the loaded batch.

Fed `lanes` (y, target) pairs per clock, each with its own valid bit: the squares of one clock are
summed exactly (an adder tree) and registered, and the next clock adds that sum to the loss, saturating.
Saturating each addition gives the contract's saturate-once result because every term is non-negative.
A pair's square is in `loss` two clocks after the pair (`busy` while some are on their way), or three
with `registered_errors`: the differences are registered before the squares, so that a select in front
of the pairs (the forward engine's, over its sample lanes) and the subtraction are not in series with
the multiplier and the adder tree in one clock.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig


class LossAccumulator(wiring.Component):
    def __init__(self, cfg: DeviceConfig, lanes: int = 1, registered_errors: bool = False):
        self.cfg, self.lanes, self.registered_errors = cfg, lanes, registered_errors
        super().__init__({
            "valid": In(lanes),
            "y": In(data.ArrayLayout(signed(cfg.y_bits), lanes)),
            "target": In(data.ArrayLayout(signed(cfg.y_bits), lanes)),
            "clear": In(1),  # start of a pass: the next pairs start a new sum (and pairs in flight are dropped)
            "loss": Out(unsigned(cfg.loss_bits)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, R = self.cfg, self.lanes
        top = cfg.loss_max
        square_bits = 2 * (cfg.y_bits + 1)
        squares = []
        errors = "sync" if self.registered_errors else "comb"
        valid = Signal(R)  # of the pairs whose differences are in err
        m.d[errors] += valid.eq(Mux(self.clear, 0, self.valid) if self.registered_errors else self.valid)
        for r in range(R):
            err = Signal(signed(cfg.y_bits + 1), name=f"err{r}")
            m.d[errors] += err.eq(self.y[r] - self.target[r])
            squares.append(Mux(valid[r], err * err, 0))
        while len(squares) > 1:  # a balanced tree; the sum of one clock is exact
            squares = [squares[k] + squares[k + 1] if k + 1 < len(squares) else squares[k]
                       for k in range(0, len(squares), 2)]
        part = Signal(unsigned(square_bits + (R - 1).bit_length()))
        part_valid = Signal()
        m.d.sync += [part.eq(squares[0]), part_valid.eq(valid.any() & ~self.clear)]
        total = self.loss + part
        with m.If(self.clear):
            m.d.sync += self.loss.eq(0)
        with m.Elif(part_valid):
            m.d.sync += self.loss.eq(Mux(total[cfg.loss_bits:].any(), top, total))  # total > top, without a comparator
        m.d.comb += self.busy.eq(part_valid | (valid.any() if self.registered_errors else 0))
        return m
