"""The learner: the LIF core array, its noise and its perturbation-update unit behind one command stream.

It computes what docs/fixed-point.md defines (bit-exact with rfsnn.sim.golden) and trains on its own:
the host loads weights and a batch, sends step parameters and TRAIN_STEP, and reads losses back; no
weight crosses the link during a step. With a training set (cfg.max_samples > 0) the host loads the set
once and TRAIN_STEPS runs up to 256 steps, each on a batch the drawer draws from it (section 7).

Lanes. P = neuron_lanes (N) x sample_lanes (S) arithmetic lanes, lane p = s * N + n. A weight RAM word
holds N weights of one presynaptic input j for N consecutive output neurons (word (j, c) = weights
A[c*N + n, j]), so one read feeds the N neurons of chunk c for all S samples of a group at once.
Batches run in groups of S samples.

Blocks, one job each:
  frontend   CommandFrontEnd: decodes commands, the host-set registers, counters, responses
  walker     ParamWalker: the canonical parameter order, for PARAM_* and the update pass
  sequencer  StepSequencer: INFER and TRAIN_STEP as passes, directions, steps and the update pass
  forward    ForwardEngine: one forward pass over the batch and its loss
  drawer     BatchDrawer: a TRAIN_STEPS step's seed and batch, from the batch stream and the set
             (only with a training set)
  mem        Memories: every RAM, laid out by MemoryMap
"""
from __future__ import annotations

from amaranth import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.commands import info_words
from rfsnn.sim.contract.config import ConfigError, DeviceConfig

from ..commands import COMMAND, RESPONSE
from .draw import BatchDrawer
from .forward import ForwardEngine
from .frontend import CommandFrontEnd
from .memories import Memories, MemoryMap
from .sequencer import StepSequencer
from .walker import ParamWalker


class Learner(wiring.Component):
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int = 1, sample_lanes: int = 8, distributed_ram: bool | None = None):
        self.check_lanes(cfg, neuron_lanes, sample_lanes)
        self.cfg, self.N, self.S = cfg, neuron_lanes, sample_lanes
        self.distributed_ram = distributed_ram  # Memories: None = LUT RAM where the platform has it
        self.info = info_words(cfg, neuron_lanes, sample_lanes)
        self.map = MemoryMap(cfg, neuron_lanes, sample_lanes)
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "rsp": Out(stream.Signature(RESPONSE)),
            "busy": Out(1),
        })

    def memory_map(self) -> dict[str, tuple[int, int]]:
        """Every RAM of this build: name -> (depth, word width in bits)."""
        return self.map.sizes()

    @staticmethod
    def check_lanes(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int) -> None:
        """Refuse a build this gateware cannot make, before anything is elaborated."""
        if neuron_lanes < 1 or sample_lanes < 1 or sample_lanes & (sample_lanes - 1):
            raise ConfigError(f"lanes: neuron_lanes >= 1 and sample_lanes a power of two, got "
                              f"{neuron_lanes} x {sample_lanes}")
        if cfg.t_shift + 2 > cfg.x_bits:
            raise ConfigError("spike counts must fit the multiplier's x_bits operand")

    def elaborate(self, platform):
        m = Module()
        cfg, N, S = self.cfg, self.N, self.S
        m.submodules.mem = mem = Memories(self.map, self.distributed_ram)
        m.submodules.frontend = fe = CommandFrontEnd(cfg, N, S, self.info, self.map)
        m.submodules.walker = walker = ParamWalker(cfg, N, self.map, StepSequencer.update_write_delay(cfg))
        m.submodules.sequencer = seq = StepSequencer(cfg, N, self.map)
        m.submodules.forward = fwd = ForwardEngine(cfg, N, S, self.map)

        wiring.connect(m, wiring.flipped(self.cmd), fe.cmd)
        wiring.connect(m, fe.rsp, wiring.flipped(self.rsp))
        m.d.comb += [self.busy.eq(fe.busy),
                     seq.infer.eq(fe.infer), seq.train.eq(fe.train), fe.done.eq(seq.done), fe.result.eq(seq.result)]
        m.d.comb += [getattr(seq, reg).eq(getattr(fe, reg))
                     for reg in ("seed", "directions", "mode", "layer_start", "gain_mant", "gain_shift", "clip")]
        m.d.comb += [fwd.batch.eq(fe.batch), fwd.sigma.eq(fe.sigma), fwd.layerwise.eq(fe.mode.layerwise),
                     fwd.samples_written.eq(mem.x_wr.en.any() | mem.t_wr.en.any())]
        users = [fe, walker, seq, fwd]
        # Write ports two blocks take turns on, the first while it is busy: the batch's (the drawer
        # during a draw, the front end's SAMPLE_WRITE otherwise).
        shared_writes = {}
        if cfg.max_samples:
            m.submodules.drawer = drawer = BatchDrawer(cfg, self.map)
            wiring.connect(m, fe.draw, drawer.draw)
            m.d.comb += [drawer.samples.eq(fe.samples), drawer.batch.eq(fe.batch), fe.base_loss.eq(seq.base_loss)]
            users.append(drawer)
            shared_writes = {"x_wr": (drawer, fe), "t_wr": (drawer, fe)}
        wiring.connect(m, seq.run, fwd.run)
        wiring.connect(m, fe.params, walker.host)
        wiring.connect(m, seq.params, walker.update)
        wiring.connect(m, fwd.spikes, fe.spikes)
        if "factors" in fwd.signature.members:  # more than one neuron lane: the factors as registers
            wiring.connect(m, seq.factors, fwd.factors)

        # RAM read ports two blocks take turns on, the first while it is busy: the weights (the forward
        # engine during a pass; the walker and the update pass otherwise). Every other port has one user
        # (the factor cache: the update pass; the pass buffer: the forward engine; the steps: READ_STEP,
        # as the update pass keeps them in registers).
        shared = {f"w{l}_rd": (fwd, walker) for l in range(cfg.n_layers)}
        for name in self.map.signatures():
            port = getattr(mem, name)
            if name in shared:
                first, second = shared[name]
                a, b = getattr(first, name), getattr(second, name)
                m.d.comb += [port.addr.eq(Mux(first.busy, a.addr, b.addr)), port.en.eq(Mux(first.busy, a.en, b.en)),
                             a.data.eq(port.data), b.data.eq(port.data)]
            elif name in shared_writes:
                first, second = shared_writes[name]
                a, b = getattr(first, name), getattr(second, name)
                m.d.comb += [getattr(port, f).eq(Mux(first.busy, getattr(a, f), getattr(b, f)))
                             for f in ("addr", "en", "data")]
            else:
                user, = (block for block in users if name in block.signature.members)
                wiring.connect(m, port, getattr(user, name))
        return m
