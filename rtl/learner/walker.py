"""The parameter walker: a pointer that visits every weight in canonical order, and the weight there.

Canonical order (docs/fixed-point.md): layer by layer, row (output neuron) by row, column (input, the
bias last) by column. Weight (l, i, j) is lane i % N of word (j, i // N) of layer l's RAM, at address
j * chunks_l + i // N, so the walker steps addresses by adding, never dividing.

Two users take turns on it, never in the same clock: the host's PARAM_REWIND / PARAM_WRITE /
PARAM_READ (`host`) and the update pass (`update`). Each can rewind it, advance it, and write the weight
at the pointer; `weight` is the weight at the pointer's position of the clock before, from the word
the RAM returns one clock after the pointer was its address (so a user that advances every clock
reads every weight in turn, one clock late).

The update pass is pipelined: it reads (issues) one weight per clock and writes each back
`update_write_delay` clocks after its read, while it reads the ones after it (the weight RAMs have
separate read and write ports). So the walker keeps the pointer's positions of the last clocks, and
the update user's `write` stores at the position of `update_write_delay` clocks before; with 0 (the
default) it writes at the pointer, like the host's.
"""
from __future__ import annotations

import math

from amaranth import Array, C, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

from .memories import MemoryMap


def walker_position(cfg: DeviceConfig, neuron_lanes: int) -> dict[str, range]:
    """The walker's coordinates and their ranges: layer, row, column, RAM word address."""
    chunks = [math.ceil(o / neuron_lanes) for o, _ in cfg.layer_shapes]
    return {
        "layer": range(cfg.n_layers),
        "row": range(max(cfg.layers[1:]) + 1),
        "col": range(max(cfg.layers[:-1]) + 2),
        "addr": range(max((i + 1) * c for (_, i), c in zip(cfg.layer_shapes, chunks)) + 1),
    }


class WalkerAccess(wiring.Signature):
    """One user's port on the walker, from the user's side."""

    def __init__(self, cfg: DeviceConfig, neuron_lanes: int):
        super().__init__({
            "rewind": Out(1),  # back to the first weight
            "advance": Out(1),  # on to the next weight
            "write": Out(1),  # store `data` at the pointer
            "data": Out(signed(cfg.w_bits)),
            "weight": In(signed(cfg.w_bits)),
            "done": In(1),  # past the last weight
            "last": In(1),  # at the last weight
            **{name: In(r) for name, r in walker_position(cfg, neuron_lanes).items() if name != "addr"},
        })


class ParamWalker(wiring.Component):
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int, memory_map: MemoryMap, update_write_delay: int = 0):
        self.cfg, self.N, self.delay = cfg, neuron_lanes, update_write_delay
        self.chunks = [math.ceil(o / neuron_lanes) for o, _ in cfg.layer_shapes]
        L = cfg.n_layers
        super().__init__({
            "host": In(WalkerAccess(cfg, neuron_lanes)),
            "update": In(WalkerAccess(cfg, neuron_lanes)),
            **memory_map.ports(*[f"w{l}_rd" for l in range(L)], *[f"w{l}_wr" for l in range(L)]),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, N, L = self.cfg, self.N, self.cfg.n_layers
        pos = walker_position(cfg, N)
        wl, wi, wj, waddr = (Signal(pos[k], name=f"w_{k}") for k in ("layer", "row", "col", "addr"))
        wchunk, wlane = Signal(range(max(self.chunks) + 1)), Signal(range(N))
        wdone = Signal()
        n_in = Array([C(i, wj.shape()) for _, i in cfg.layer_shapes])
        n_out = Array([C(o, wi.shape()) for o, _ in cfg.layer_shapes])
        chunks_of = Array([C(c, waddr.shape()) for c in self.chunks])
        users = (self.host, self.update)

        with m.If(self.host.advance | self.update.advance):
            with m.If(wj == n_in[wl]):  # past the bias: next row
                m.d.sync += wj.eq(0)
                with m.If(wi == n_out[wl] - 1):
                    m.d.sync += [wi.eq(0), wchunk.eq(0), wlane.eq(0), waddr.eq(0)]
                    with m.If(wl == L - 1):
                        m.d.sync += [wdone.eq(1), wl.eq(0)]
                    with m.Else():
                        m.d.sync += wl.eq(wl + 1)
                with m.Else():
                    m.d.sync += wi.eq(wi + 1)
                    with m.If(wlane == N - 1):
                        m.d.sync += [wlane.eq(0), wchunk.eq(wchunk + 1), waddr.eq(wchunk + 1)]
                    with m.Else():
                        m.d.sync += [wlane.eq(wlane + 1), waddr.eq(wchunk)]
            with m.Else():
                m.d.sync += [wj.eq(wj + 1), waddr.eq(waddr + chunks_of[wl])]
        with m.If(self.host.rewind | self.update.rewind):
            m.d.sync += [wl.eq(0), wi.eq(0), wj.eq(0), wchunk.eq(0), wlane.eq(0), waddr.eq(0), wdone.eq(0)]

        # The pointer's positions (word address, layer, lane) of the last clocks: past[d] is d clocks ago.
        past = [(waddr, wl, wlane)]
        for d in range(1, max(1, self.delay) + 1):
            regs = tuple(Signal.like(x, name=f"{x.name}_{d}") for x in past[-1])
            m.d.sync += [r.eq(x) for r, x in zip(regs, past[-1])]
            past.append(regs)

        # the weight at last clock's position, from its layer's RAM (the word of last clock's address)
        _, rd_layer, rd_lane = past[1]
        word = Signal.like(self.w0_rd.data)
        for l in range(L):
            rd = getattr(self, f"w{l}_rd")
            m.d.comb += rd.addr.eq(waddr)
            with m.If(rd_layer == l):
                m.d.comb += word.eq(rd.data)
        weight = Array([word[n] for n in range(N)])[rd_lane]

        write = self.host.write | self.update.write
        value = Mux(self.update.write, self.update.data, self.host.data)
        w_addr, w_layer, w_lane = (Mux(self.update.write, u, h) for u, h in zip(past[self.delay], past[0]))
        for l in range(L):
            wr = getattr(self, f"w{l}_wr")
            with m.If(write & (w_layer == l)):
                m.d.comb += [wr.addr.eq(w_addr), wr.en.eq(C(1, N) << w_lane)]
                m.d.comb += [wr.data[n].eq(value) for n in range(N)]

        last = (wl == L - 1) & (wi == n_out[wl] - 1) & (wj == n_in[wl])
        for user in users:
            m.d.comb += [user.weight.eq(weight), user.done.eq(wdone), user.last.eq(last),
                         user.layer.eq(wl), user.row.eq(wi), user.col.eq(wj)]
        return m
