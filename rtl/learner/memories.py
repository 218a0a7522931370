"""The memory map: every RAM of a build (its word, depth and ports), and the component that holds them.

MemoryMap is the one description of the layout: Memories builds the RAMs from it, and each block that
uses a RAM takes its ports with the signatures MemoryMap.ports gives, so a RAM changes in one place.
Learner.memory_map() reports it. Port names: f"{ram}_wr" for the write port, f"{ram}_{read}" for each
read port (`rd`, or `a_rd` and `b_rd` for the factor cache, which is read twice per clock).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth import Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from rfsnn.sim.contract.config import DeviceConfig

from .counts import count_shape, first_layer_looked_up
from .factors import DirectionFactors
from .perturb import FACTOR


@dataclass(frozen=True)
class RAM:
    shape: object  # the word
    depth: int
    reads: tuple[str, ...] = ("rd",)
    lane_enables: bool = False  # one write enable per element of an array word
    transparent: bool = False  # a read in the clock of a write to the same word returns the new word
    # ... or the old word, which the learner uses there (otherwise a block RAM's such reads are
    # undefined in a build and poisoned in simulation: Memories, `collisions`)
    read_old: bool = False
    # On a critical path and small: where the FPGA has distributed (LUT) RAM, a registered address and an
    # asynchronous read, the same timing as a block RAM's read without its ~6 ns clock-to-output. Only
    # for a RAM never read and written at one word in one clock (see Memories).
    distributed: bool = False

    @property
    def width(self) -> int:
        return Shape.cast(self.shape).width

    def read_signature(self) -> ReadPort.Signature:
        return ReadPort.Signature(addr_width=ceil_log2(self.depth), shape=self.shape)

    def write_signature(self) -> WritePort.Signature:
        return WritePort.Signature(addr_width=ceil_log2(self.depth), shape=self.shape,
                                   granularity=1 if self.lane_enables else None)


class MemoryMap:
    """The RAMs of a build with P = N x S lanes, by name (lane p = s * N + n, docs/rtl.md)."""

    def __init__(self, cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int):
        N, S = neuron_lanes, sample_lanes
        P = N * S
        H = cfg.n_layers - 1
        chunks = [math.ceil(o / N) for o, _ in cfg.layer_shapes]  # of the outputs of weight layer l
        n0, nL = cfg.layers[0], cfg.layers[-1]
        u_word = data.ArrayLayout(signed(cfg.u_bits), P)
        rams = {}
        # weight layer l: word (j, c) holds the weights of input j (bias last) for outputs c*N .. c*N+N-1
        for l, (_, i) in enumerate(cfg.layer_shapes):
            # (with N > 1 the update pass reads a word in the clock it writes back another of its lanes)
            rams[f"w{l}"] = RAM(data.ArrayLayout(signed(cfg.w_bits), N), (i + 1) * chunks[l], lane_enables=True,
                                read_old=N > 1)
        # The batch, one word per sample (its inputs; its targets; its outputs): deep and narrow, so a
        # sample lane costs no block RAM. The forward engine loads a group's inputs into the lanes'
        # registers, and reads targets and writes outputs one sample per clock in the loss phase.
        rams["x"] = RAM(data.ArrayLayout(signed(cfg.x_bits), n0), cfg.max_batch, lane_enables=True)
        rams["t"] = RAM(data.ArrayLayout(signed(cfg.y_bits), nL), cfg.max_batch, lane_enables=True)  # targets
        rams["y"] = RAM(data.ArrayLayout(signed(cfg.y_bits), nL), cfg.max_batch, lane_enables=True)  # outputs
        # The training set (TRAIN_STEPS), laid out as the batch: DATA_WRITE writes a field, the batch
        # drawer reads a whole sample per clock into the x and t RAMs. Deep: block RAM, never LUT RAM.
        if cfg.max_samples:
            rams["set_x"] = RAM(data.ArrayLayout(signed(cfg.x_bits), n0), cfg.max_samples, lane_enables=True)
            rams["set_t"] = RAM(data.ArrayLayout(signed(cfg.y_bits), nL), cfg.max_samples, lane_enables=True)
        # Membranes and spike counts. Transparent only with a single chunk: a chunk is then read in the
        # clock its last update is written. Otherwise the two never meet, and a block RAM cannot be
        # transparent without extra logic. With one hidden layer its counts are looked up from its input
        # currents (counts.SpikeCountTable): no current or membrane RAM, and no update of a count.
        looked_up = first_layer_looked_up(cfg)
        if not looked_up:
            rams["i"] = RAM(u_word, chunks[0])  # input currents of the first hidden layer
            for h in range(H):
                rams[f"u{h}"] = RAM(u_word, chunks[h], transparent=chunks[h] == 1)
        rams["count"] = RAM(data.ArrayLayout(count_shape(cfg), P), chunks[H - 1],  # 0..T, last hidden
                            transparent=chunks[H - 1] == 1 and not looked_up)
        # Event lists: the chunks of hidden layer h (h < H-1) that spiked in this time step, compacted
        # (silent chunks are not stored, so the next layer's cost follows the spikes, not the width).
        for h in range(H - 1):
            rams[f"events{h}"] = RAM(data.StructLayout({"chunk": range(chunks[h]), "bits": P}), chunks[h],
                                     transparent=True)
        # The step's direction factors: word = flat factor index (DirectionFactors.slot_starts), lane k =
        # direction k, so the update pass reads a factor of every direction in one word. A draw writes
        # its direction's lane.
        FPD = DirectionFactors.factors_per_direction(cfg)
        rams["factors"] = RAM(data.ArrayLayout(FACTOR, cfg.max_directions), FPD, reads=("a_rd", "b_rd"), lane_enables=True)
        if N == 1:
            # The factors of the direction whose passes run, one value per word, for the forward engine
            # (with one neuron lane it reads a_i and b_j with each weight): no lane select after the
            # cache's wide, spread-out words on the perturbed read's path. Two halves, by the direction's
            # parity, so that the next direction can be drawn while this one's passes run.
            rams["pass_factors"] = RAM(FACTOR, 2 * FPD, reads=("a_rd", "b_rd"), distributed=True)
        rams["loss"] = RAM(unsigned(cfg.loss_bits), 2 * cfg.max_directions + 1)  # the losses of a command
        rams["step"] = RAM(signed(cfg.step_bits), cfg.max_directions)  # the clipped steps
        self.rams: dict[str, RAM] = rams

    def sizes(self) -> dict[str, tuple[int, int]]:
        """name -> (depth, word width in bits)."""
        return {name: (ram.depth, ram.width) for name, ram in self.rams.items()}

    def signatures(self) -> dict[str, wiring.Signature]:
        """Every port by name, as the RAM sees it."""
        out = {}
        for name, ram in self.rams.items():
            out[f"{name}_wr"] = ram.write_signature()
            out.update({f"{name}_{read}": ram.read_signature() for read in ram.reads})
        return out

    def ports(self, *names: str) -> dict[str, wiring.Member]:
        """Signature members of a block that uses these ports."""
        sigs = self.signatures()
        return {name: In(sigs[name]) for name in names}


class Memories(wiring.Component):
    """Every RAM of the map; each port is a member of the signature, named as in MemoryMap.

    `distributed`: build the RAMs the map marks `distributed` from LUT RAM (a registered address, an
    asynchronous read: the same ports, clock for clock, except that a word read in the clock it is
    written comes back new; the map marks only RAMs where that never happens); None (the default)
    decides by the platform the design is built for: yes on the ECP5, which has LUT RAM, no in
    simulation and on the iCE40.

    `collisions`: what a block RAM's read of a word in the clock that word is written returns (the
    transparent RAMs excepted, which return the new word). The learner uses such a read only where the
    map marks the RAM read_old (those keep the old word), so for the others:
    "undefined" (a build: yosys is told `no_rw_check` and builds no bypass; the iCE40's block RAMs would
    otherwise need a register copy of each write port and a multiplexer per read bit, ~400 logic cells
    of the UP5K's 5,280), "poisoned" (simulation: the word comes back inverted, so that a test that
    used one would fail, bit-exact against the golden model) or "old" (the old word). None (the
    default): "undefined" on the iCE40, "old" on the ECP5 and "poisoned" in simulation. The ECP5 keeps
    the old word because yosys 0.69 and 0.70 (abc9) fail an internal check on some of its netlists with
    no_rw_check RAMs (`rfsnn build --board ulx3s-25f --sample-lanes 16`; docs/boards.md), and its LUTs
    have room for the bypass."""

    def __init__(self, memory_map: MemoryMap, distributed: bool | None = None, collisions: str | None = None):
        assert collisions in (None, "undefined", "poisoned", "old")
        self.map, self.distributed, self.collisions = memory_map, distributed, collisions
        super().__init__({name: Out(sig) for name, sig in memory_map.signatures().items()})

    def elaborate(self, platform):
        m = Module()
        family = getattr(platform, "family", None)
        distributed = self.distributed if self.distributed is not None else family == "ecp5"
        collisions = self.collisions or ("poisoned" if platform is None else "old" if family == "ecp5" else "undefined")
        for name, ram in self.map.rams.items():
            lut = ram.distributed and distributed
            # a block RAM port with Amaranth's contract on collisions (the new word, or the old one)
            kept = ram.transparent or ram.read_old or collisions == "old"
            # Block RAM even when small: yosys would build the small ones from flip-flops and read
            # multiplexers, which cost the iCE40 hundreds of logic cells; block RAMs are to spare.
            attrs = {"ram_style": "distributed" if lut else "block"}
            if collisions == "undefined" and not (kept or lut):
                attrs["no_rw_check"] = 1
            m.submodules[name] = mem = Memory(shape=ram.shape, depth=ram.depth, init=[], attrs=attrs)
            write = mem.write_port(granularity=1 if ram.lane_enables else None)
            wiring.connect(m, wiring.flipped(getattr(self, f"{name}_wr")), write)
            for read in ram.reads:
                ours = getattr(self, f"{name}_{read}")
                if lut:  # read-before-write like a block RAM's port: the write lands at the clock's end
                    assert not ram.transparent
                    port = mem.read_port(domain="comb")
                    addr = Signal.like(ours.addr, name=f"{name}_{read}_addr")
                    with m.If(ours.en):
                        m.d.sync += addr.eq(ours.addr)
                    m.d.comb += [port.addr.eq(addr), ours.data.eq(port.data)]
                elif kept:
                    port = mem.read_port(transparent_for=(write,) if ram.transparent else ())
                    wiring.connect(m, wiring.flipped(ours), port)
                else:
                    # An asynchronous read and a register: yosys merges the two into the block RAM's
                    # synchronous port, and only in that form does it honour no_rw_check (the ports
                    # Amaranth makes synchronous carry a read-old-word contract it must keep).
                    port = mem.read_port(domain="comb")
                    m.d.comb += port.addr.eq(ours.addr)
                    with m.If(ours.en):
                        if collisions == "poisoned":
                            hit = write.en.any() & (write.addr == ours.addr)
                            word = Value.cast(port.data)
                            m.d.sync += ours.data.eq(Mux(hit, ~word, word))
                        else:
                            m.d.sync += ours.data.eq(port.data)
        return m
