"""rtl.learner.memories: the memory map of a build, and Memories, which builds every RAM of it."""
import pytest
from amaranth import Shape, Value

from rfsnn.rtl.learner.memories import Memories, MemoryMap
from rfsnn.sim.contract.config import DeviceConfig


def test_default_build_map():
    """The table in docs/rtl.md (2-64-1, N = 1, S = 8, max_batch 256, max_directions 32), which
    Learner.memory_map() reports."""
    assert MemoryMap(DeviceConfig(), 1, 8).sizes() == {
        "w0": (192, 16), "w1": (65, 16), "x": (256, 32), "t": (256, 16), "y": (256, 16), "set_x": (4096, 32),
        "set_t": (4096, 16), "count": (64, 40), "factors": (133, 96), "pass_factors": (266, 3), "loss": (65, 48),
        "step": (32, 24)}
    # no training set (the iCEBreaker's build): no set RAMs
    assert not {"set_x", "set_t"} & set(MemoryMap(DeviceConfig(max_samples=0), 1, 8).sizes())


def test_transparent_where_a_word_is_read_in_the_clock_it_is_written():
    """Membranes and counts of a single-chunk layer (its next time step reads what this one writes), and
    the event lists (an entry is read as it is appended). One hidden layer has no membranes, and its
    looked-up counts are written once per sample, never read back in the same clock."""
    rams = MemoryMap(DeviceConfig(layers=(2, 2, 5, 1)), 2, 2).rams  # chunks: 1, 3
    assert {name for name, ram in rams.items() if ram.transparent} == {"u0", "events0"}
    rams = MemoryMap(DeviceConfig(layers=(2, 3, 4, 1)), 4, 2).rams  # chunks: 1, 1
    assert {name for name, ram in rams.items() if ram.transparent} == {"u0", "u1", "count", "events0"}
    rams = MemoryMap(DeviceConfig(layers=(2, 3, 1)), 4, 2).rams
    assert not any(ram.transparent for ram in rams.values()) and "u0" not in rams and "i" not in rams


@pytest.mark.parametrize("layers,lanes", [((2, 6, 5, 1), (2, 2)), ((1, 1, 3, 2), (1, 4))])
@pytest.mark.parametrize("distributed", [False, True])
@pytest.mark.parametrize("collisions", [None, "old"])
def test_every_port_reaches_its_ram(layers, lanes, distributed, collisions, simulate):
    """Each RAM keeps a word at its last address, per lane where it has lane enables, and a read in the
    clock of a write to the same word returns the new word only where the map says transparent, or the
    RAM is built from LUT RAM (distributed: the ECP5 build of the pass buffer, which is never read and
    written at one word in one clock); otherwise the old word where the map says the learner reads it
    (read_old) or Memories is told to, and in simulation by default the old word inverted (poisoned: a
    build leaves that read undefined)."""
    mmap = MemoryMap(DeviceConfig(layers=layers, t_steps=8, max_batch=16, max_directions=4), *lanes)
    dut = Memories(mmap, distributed, collisions)
    checked = []

    async def bench(ctx):
        for name, ram in mmap.rams.items():
            width = Shape.cast(ram.shape).width
            wr = getattr(dut, f"{name}_wr")
            reads = [getattr(dut, f"{name}_{r}") for r in ram.reads]
            en_all = (1 << len(wr.en)) - 1
            pattern = (0x5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A >> 3) & ((1 << width) - 1)
            ctx.set(wr.addr, ram.depth - 1)
            ctx.set(Value.cast(wr.data), pattern)
            ctx.set(wr.en, en_all)
            await ctx.tick()
            ctx.set(wr.en, 0)
            for rd in reads:
                ctx.set(rd.addr, ram.depth - 1)
            await ctx.tick()
            assert [ctx.get(Value.cast(rd.data)) for rd in reads] == [pattern] * len(reads), name
            if ram.lane_enables:  # a write with lane 0 enabled alone leaves the other lanes
                ctx.set(Value.cast(wr.data), 0)
                ctx.set(wr.en, 1)
                await ctx.tick()
                ctx.set(wr.en, 0)
                await ctx.tick()
                lane = width // len(wr.en)
                assert ctx.get(Value.cast(reads[0].data)) == pattern & ~((1 << lane) - 1), name
            # write word 0 and read it in the same clock
            for rd in reads:
                ctx.set(rd.addr, 0)
            await ctx.tick()
            before = ctx.get(Value.cast(reads[0].data))
            ctx.set(wr.addr, 0)
            ctx.set(Value.cast(wr.data), before ^ 1)
            ctx.set(wr.en, en_all)
            await ctx.tick()
            ctx.set(wr.en, 0)
            if ram.transparent or (distributed and ram.distributed):
                expect = before ^ 1
            elif ram.read_old or collisions == "old":
                expect = before
            else:
                expect = ~before
            mask = (1 << width) - 1
            assert [ctx.get(Value.cast(rd.data)) & mask for rd in reads] == [expect & mask] * len(reads), name
            checked.append(name)

    simulate(dut, bench)
    assert checked == list(mmap.rams)
    assert any(ram.transparent for ram in mmap.rams.values()) and any(ram.lane_enables for ram in mmap.rams.values())
    assert not distributed or lanes[0] > 1 or any(ram.distributed for ram in mmap.rams.values())
