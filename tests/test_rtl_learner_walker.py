"""rtl.learner.walker.ParamWalker on the weight RAMs: canonical order, word layout, both users' ports."""
import math

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from rfsnn.rtl.learner.memories import MemoryMap
from rfsnn.rtl.learner.walker import ParamWalker
from rfsnn.sim.contract.config import DeviceConfig


class WalkerOnRAMs(Elaboratable):
    def __init__(self, cfg, neuron_lanes, update_write_delay=0):
        self.map = MemoryMap(cfg, neuron_lanes, 1)
        self.walker = ParamWalker(cfg, neuron_lanes, self.map, update_write_delay)
        self.rams = [self.map.rams[f"w{l}"] for l in range(cfg.n_layers)]
        self.mems = [Memory(shape=ram.shape, depth=ram.depth, init=[]) for ram in self.rams]

    def elaborate(self, platform):
        m = Module()
        m.submodules.walker = self.walker
        for l, mem in enumerate(self.mems):
            m.submodules[f"w{l}"] = mem
            wiring.connect(m, getattr(self.walker, f"w{l}_wr"), mem.write_port(granularity=1))
            wiring.connect(m, getattr(self.walker, f"w{l}_rd"), mem.read_port())
        return m


def canonical(cfg):
    """(layer, row, column) of every parameter in the contract's order: rows, columns, the bias last."""
    return [(l, i, j) for l, (o, n_in) in enumerate(cfg.layer_shapes) for i in range(o) for j in range(n_in + 1)]


@pytest.mark.parametrize("layers,lanes", [((2, 5, 3), 2), ((1, 4, 2, 1), 1), ((3, 7, 2), 3)])
def test_walks_canonical_order_into_the_word_layout(layers, lanes, simulate):
    cfg = DeviceConfig(layers=layers)
    top = WalkerOnRAMs(cfg, lanes)
    host, update = top.walker.host, top.walker.update
    order = canonical(cfg)
    lo, hi = cfg.w_range
    values = np.random.default_rng(sum(layers) + lanes).integers(lo, hi + 1, size=len(order))
    values[:2] = lo, hi  # the rails keep their sign
    chunks = [math.ceil(o / lanes) for o, _ in cfg.layer_shapes]
    seen = {"positions": [], "read": []}

    def position(ctx, port):
        return (ctx.get(port.layer), ctx.get(port.row), ctx.get(port.col))

    async def bench(ctx):
        # the host writes every parameter in turn
        ctx.set(host.rewind, 1)
        await ctx.tick()
        ctx.set(host.rewind, 0)
        for n, value in enumerate(values):
            seen["positions"].append(position(ctx, host))
            assert ctx.get(host.last) == (n == len(order) - 1)
            assert not ctx.get(host.done)
            ctx.set(host.data, int(value))
            ctx.set(host.write, 1)
            ctx.set(host.advance, 1)
            await ctx.tick()
        ctx.set(host.write, 0)
        ctx.set(host.advance, 0)
        assert ctx.get(host.done) and ctx.get(update.done)
        # weight (l, i, j) is lane i % N of word j * chunks_l + i // N
        for (l, i, j), value in zip(order, values):
            assert ctx.get(top.mems[l].data[j * chunks[l] + i // lanes])[i % lanes] == value, (l, i, j)
        # the update pass's port reads them back, one clock after the pointer moved
        ctx.set(update.rewind, 1)
        await ctx.tick()
        ctx.set(update.rewind, 0)
        for _ in order:
            await ctx.tick()
            assert position(ctx, update) == position(ctx, host)
            seen["read"].append(ctx.get(update.weight))
            ctx.set(update.advance, 1)
            await ctx.tick()
            ctx.set(update.advance, 0)
        assert ctx.get(update.done)

    simulate(top, bench)
    assert seen["positions"] == order
    assert seen["read"] == list(values)


def test_update_write_takes_its_own_data_and_rewind_restarts(simulate):
    cfg = DeviceConfig(layers=(2, 3, 1))
    top = WalkerOnRAMs(cfg, 2)
    host, update = top.walker.host, top.walker.update

    async def bench(ctx):
        ctx.set(host.data, 11)  # the host's value, not written: the update pass writes
        ctx.set(update.data, -7)
        ctx.set(update.write, 1)
        ctx.set(update.advance, 1)
        await ctx.tick()
        ctx.set(update.write, 0)
        await ctx.tick()  # advanced twice: (0, 0, 2)
        ctx.set(update.advance, 0)
        assert (ctx.get(host.layer), ctx.get(host.row), ctx.get(host.col)) == (0, 0, 2)
        ctx.set(host.rewind, 1)
        await ctx.tick()
        ctx.set(host.rewind, 0)
        assert (ctx.get(update.layer), ctx.get(update.row), ctx.get(update.col)) == (0, 0, 0)
        assert ctx.get(top.mems[0].data[0])[0] == -7
        assert ctx.get(top.mems[0].data[1])[0] == 0  # nothing written while only advancing

    simulate(top, bench)


@pytest.mark.parametrize("layers,lanes,delay", [((2, 5, 3), 2, 2), ((1, 4, 2, 1), 1, 3), ((3, 7, 2), 3, 1)])
def test_pipelined_update_reads_one_weight_per_clock_and_writes_each_back_later(layers, lanes, delay, simulate):
    """The update pass's pattern: advance every clock, take `weight` one clock after each position, and
    write each weight's new value `delay` clocks after its position (reads of the next weights overlap)."""
    cfg = DeviceConfig(layers=layers)
    top = WalkerOnRAMs(cfg, lanes, delay)
    host, update = top.walker.host, top.walker.update
    order = canonical(cfg)
    values = np.random.default_rng(len(order)).integers(-1000, 1000, size=len(order))
    chunks = [math.ceil(o / lanes) for o, _ in cfg.layer_shapes]
    seen = []

    async def bench(ctx):
        ctx.set(host.rewind, 1)
        await ctx.tick()
        ctx.set(host.rewind, 0)
        for value in values:
            ctx.set(host.data, int(value))
            ctx.set(host.write, 1)
            ctx.set(host.advance, 1)
            await ctx.tick()
        ctx.set(host.write, 0)
        ctx.set(host.advance, 0)
        ctx.set(update.rewind, 1)
        await ctx.tick()
        ctx.set(update.rewind, 0)
        read = []
        for clock in range(len(order) + delay):
            ctx.set(update.advance, int(clock < len(order)))
            if clock >= 1:
                read.append(ctx.get(update.weight))
            n = clock - delay  # the weight written back this clock
            ctx.set(update.write, int(n >= 0))
            if n >= 0:
                ctx.set(update.data, int(read[n]) * 3 + 1)
            await ctx.tick()
        ctx.set(update.write, 0)
        seen.extend(read[:len(order)])
        for (l, i, j), value in zip(order, values):
            assert ctx.get(top.mems[l].data[j * chunks[l] + i // lanes])[i % lanes] == value * 3 + 1, (l, i, j)
        # the host's port still writes and reads at the pointer
        ctx.set(host.rewind, 1)
        await ctx.tick()
        ctx.set(host.rewind, 0)
        ctx.set(host.data, -5)
        ctx.set(host.write, 1)
        await ctx.tick()
        ctx.set(host.write, 0)
        await ctx.tick()
        assert ctx.get(host.weight) == -5

    simulate(top, bench)
    assert seen == list(values)
