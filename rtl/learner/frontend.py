"""The command front end: decodes the command stream, holds the host-set registers, the counters and the
response register, and moves bulk data through auto-incrementing pointers (so it never divides an
address): parameters through the walker, samples through the sample pointer, the training set's
through the set pointer.

Exactly one response per command. INFER and TRAIN_STEP start the sequencer and are answered in the
clock it is done, with its result; TRAIN_STEPS runs N x (the drawer's draw, then TRAIN_STEP), moving
LAYER_START on after each step, and is answered in the last step's last clock with the sum of the
steps' base losses. Every other command is answered in the clock it is taken, or the next (the reads
of a RAM: CMD_READ). `busy` is high from the clock after INFER, TRAIN_STEP or TRAIN_STEPS is taken
until the one it is answered in: the clocks the counters call busy.

Without a training set (cfg.max_samples == 0) there is no set pointer and no run: DATA_SEEK,
DATA_WRITE, TRAIN_STEPS and SET SAMPLES are refused, and SET DATA_SEED is taken and has no effect,
as on the golden device.
"""
from __future__ import annotations

from amaranth import Array, C, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from rfsnn.sim.contract.commands import Counter, Op, Reg, Status
from rfsnn.sim.contract.config import MAX_RUN_STEPS, DeviceConfig, register_limits

from ..commands import COMMAND, RESPONSE
from .draw import DrawControl
from .forward import spike_report
from .memories import MemoryMap
from .walker import WalkerAccess

MODE = data.StructLayout({"gauss4": 1, "forward": 1, "layerwise": 1, "stochastic_rounding": 1})  # Mode's bits
_READ_PARAM, _READ_OUTPUT, _READ_LOSS, _READ_STEP = range(4)  # what CMD_READ answers with


class CommandFrontEnd(wiring.Component):
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, info: list[int],
                 memory_map: MemoryMap):
        self.cfg, self.S, self.info = cfg, sample_lanes, info
        self.H = cfg.n_layers - 1
        self.has_set = cfg.max_samples > 0
        training_set = {
            "samples": Out(range(cfg.max_samples + 1), init=1),  # Reg.SAMPLES
            "draw": Out(DrawControl()),  # the batch drawer (its stream is Reg.DATA_SEED)
            "base_loss": In(cfg.loss_bits),  # the sequencer's: the base loss of the step it is done with
            **memory_map.ports("set_x_wr", "set_t_wr"),
        } if self.has_set else {}
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "rsp": Out(stream.Signature(RESPONSE)),
            "busy": Out(1),
            # the registers SET writes (Reg)
            "batch": Out(range(cfg.max_batch + 1), init=1),
            "seed": Out(32),
            "directions": Out(range(cfg.max_directions + 1), init=1),
            "sigma": Out(cfg.w_bits, init=64),
            "gain_mant": Out(cfg.gain_bits),
            "gain_shift": Out(6, init=1),
            "clip": Out(cfg.step_bits - 1),
            "mode": Out(MODE),
            "layer_start": Out(range(cfg.n_layers)),
            # the sequencer: INFER or TRAIN_STEP (one clock), then `done` with the response's data
            "infer": Out(1), "train": Out(1),
            "done": In(1), "result": In(64),
            "params": Out(WalkerAccess(cfg, neuron_lanes)),
            "spikes": In(stream.Signature(spike_report(cfg, neuron_lanes * sample_lanes), always_ready=True)),
            **memory_map.ports("x_wr", "t_wr", "y_rd", "loss_rd", "step_rd"),
            **training_set,
        })

    def elaborate(self, platform):
        m = Module()
        rsp = _ResponseRegister(m, self.rsp)
        counters = self._counters(m)
        ptr = _SamplePointer(self.cfg, self.cfg.max_batch, outputs=True)
        set_ptr = _SamplePointer(self.cfg, self.cfg.max_samples) if self.has_set else None
        run = _Run(self.cfg) if self.has_set else None
        # read addresses for CMD_READ: the data arrives next clock
        index, nL = self.cmd.payload.index, self.cfg.layers[-1]
        m.d.comb += [self.y_rd.addr.eq(ptr.sample), self.loss_rd.addr.eq(index),
                     self.step_rd.addr.eq(index)]
        read_kind = Signal(2)  # what CMD_READ answers with
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~rsp.pending)
                with m.If(self.cmd.valid & ~rsp.pending):
                    with m.Switch(self.cmd.payload.op):
                        self._register_commands(m, rsp)
                        self._param_commands(m, rsp, read_kind)
                        self._sample_commands(m, rsp, ptr, read_kind)
                        self._set_commands(m, rsp, set_ptr, run, counters)
                        self._result_commands(m, rsp, counters, read_kind)
                        with m.Case(Op.INFER):
                            m.d.comb += self.infer.eq(1)
                            m.d.sync += counters[Counter.CYCLES_LAST].eq(0)
                            m.next = "BUSY"
                        with m.Case(Op.TRAIN_STEP):
                            m.d.comb += self.train.eq(1)
                            m.d.sync += counters[Counter.CYCLES_LAST].eq(0)
                            m.next = "BUSY"
                        with m.Default():
                            rsp.send(status=Status.UNKNOWN)
            with m.State("CMD_READ"):
                with m.Switch(read_kind):
                    with m.Case(_READ_PARAM):
                        rsp.send(self.params.weight)
                        m.d.comb += self.params.advance.eq(1)
                    with m.Case(_READ_OUTPUT):
                        rsp.send(Array([self.y_rd.data[o] for o in range(nL)])[ptr.output])
                        with m.If(ptr.output == nL - 1):
                            m.d.sync += [ptr.output.eq(0), ptr.sample.eq(ptr.sample + 1)]
                        with m.Else():
                            m.d.sync += ptr.output.eq(ptr.output + 1)
                    with m.Case(_READ_LOSS):
                        rsp.send(self.loss_rd.data)
                    with m.Case(_READ_STEP):
                        rsp.send(self.step_rd.data)
                m.next = "IDLE"
            with m.State("BUSY"):
                with m.If(self.done):
                    rsp.send(self.result)
                    m.next = "IDLE"
            if self.has_set:
                self._run_states(m, rsp, run)
        busy = fsm.ongoing("BUSY")
        if self.has_set:
            busy |= fsm.ongoing("DRAW") | fsm.ongoing("RUN_STEP")
            with m.If(self.draw.seed.valid):  # a run's step: SEED is the stream's word 0
                m.d.sync += self.seed.eq(self.draw.seed.payload)
        m.d.comb += self.busy.eq(busy)
        return m

    def _register_commands(self, m, rsp):
        """NOP, INFO (the build's configuration), SET (a register takes the value only if
        StepParams.validate, the contract's limits, would)."""
        index, value = self.cmd.payload.index, self.cmd.payload.data
        with m.Case(Op.NOP):
            rsp.send()
        with m.Case(Op.INFO):
            with m.If(index < len(self.info)):
                rsp.send(Array([C(v, 64) for v in self.info])[index])
            with m.Else():
                rsp.send(status=Status.RANGE)
        with m.Case(Op.SET):
            limits = register_limits(self.cfg)
            with m.Switch(index):
                for reg in Reg:
                    lo, hi = limits[reg.name.lower()]
                    if lo > hi:  # no legal value (SAMPLES without a training set): refused by Default
                        continue
                    with m.Case(reg):
                        with m.If(_in_range(value, lo, hi)):
                            if reg == Reg.DATA_SEED:  # loads the batch stream's register (nothing without a set)
                                if self.has_set:
                                    m.d.comb += [self.draw.load.eq(1), self.draw.data_seed.eq(value)]
                            else:
                                m.d.sync += getattr(self, reg.name.lower()).eq(value)
                            rsp.send()
                        with m.Else():
                            rsp.send(status=Status.RANGE)
                with m.Default():
                    rsp.send(status=Status.RANGE)

    def _param_commands(self, m, rsp, read_kind):
        """PARAM_REWIND, PARAM_WRITE, PARAM_READ: the weight at the walker, which then moves on."""
        value, w_bits = self.cmd.payload.data, self.cfg.w_bits
        with m.Case(Op.PARAM_REWIND):
            m.d.comb += self.params.rewind.eq(1)
            rsp.send()
        with m.Case(Op.PARAM_WRITE):
            with m.If(self.params.done | ~_fits_signed(value, w_bits)):
                rsp.send(status=Status.RANGE)
            with m.Else():
                m.d.comb += [self.params.write.eq(1), self.params.data.eq(value[:w_bits]), self.params.advance.eq(1)]
                rsp.send()
        with m.Case(Op.PARAM_READ):
            with m.If(self.params.done):
                rsp.send(status=Status.RANGE)
            with m.Else():
                m.d.sync += read_kind.eq(_READ_PARAM)
                m.next = "CMD_READ"

    def _sample_commands(self, m, rsp, ptr, read_kind):
        """SAMPLE_SEEK; SAMPLE_WRITE: the next field of the sample, inputs then targets, into the sample's
        word; OUTPUT_READ: its next output."""
        cfg = self.cfg
        with m.Case(Op.SAMPLE_SEEK):
            self._seek(m, rsp, ptr)
        with m.Case(Op.SAMPLE_WRITE):
            self._write_field(m, rsp, ptr, self.x_wr, self.t_wr)
        with m.Case(Op.OUTPUT_READ):
            with m.If(ptr.sample >= cfg.max_batch):
                rsp.send(status=Status.RANGE)
            with m.Else():
                m.d.sync += read_kind.eq(_READ_OUTPUT)
                m.next = "CMD_READ"

    def _set_commands(self, m, rsp, ptr, run, counters):
        """DATA_SEEK and DATA_WRITE, into the training set as SAMPLE_SEEK and SAMPLE_WRITE into the batch;
        TRAIN_STEPS starts the first draw of its run. Refused without a set."""
        value = self.cmd.payload.data
        if not self.has_set:
            with m.Case(Op.DATA_SEEK, Op.DATA_WRITE, Op.TRAIN_STEPS):
                rsp.send(status=Status.RANGE)
            return
        with m.Case(Op.DATA_SEEK):
            self._seek(m, rsp, ptr)
        with m.Case(Op.DATA_WRITE):
            self._write_field(m, rsp, ptr, self.set_x_wr, self.set_t_wr)
        with m.Case(Op.TRAIN_STEPS):
            with m.If(_in_range(value, 1, MAX_RUN_STEPS)):
                m.d.comb += self.draw.start.eq(1)
                m.d.sync += [run.left.eq(value), run.total.eq(0), counters[Counter.CYCLES_LAST].eq(0)]
                m.next = "DRAW"
            with m.Else():
                rsp.send(status=Status.RANGE)

    def _run_states(self, m, rsp, run):
        """A run's steps: the drawer fills the batch (DRAW), then TRAIN_STEP (RUN_STEP); after each,
        LAYER_START = (LAYER_START + K) mod n_layers and the step's base loss joins the sum."""
        cfg = self.cfg
        L = cfg.n_layers
        moved_on = Array([C(v % L, range(L)) for v in range(L + cfg.max_directions)])  # (start + K) mod L
        with m.State("DRAW"):
            with m.If(self.draw.done):
                m.d.comb += self.train.eq(1)
                m.next = "RUN_STEP"
        with m.State("RUN_STEP"):
            with m.If(self.done):
                m.d.sync += [run.total.eq(run.total + self.base_loss), run.left.eq(run.left - 1),
                             self.layer_start.eq(moved_on[self.layer_start + self.directions])]
                with m.If(run.left == 1):
                    rsp.send(run.total + self.base_loss)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.draw.start.eq(1)
                    m.next = "DRAW"

    def _seek(self, m, rsp, ptr):
        """SAMPLE_SEEK or DATA_SEEK: the pointer to the start of sample `data`, if it is in its memory."""
        value = self.cmd.payload.data
        bits = ptr.sample.shape().width
        with m.If((value[bits:] == 0) & (value[:bits] < ptr.depth)):
            m.d.sync += [ptr.sample.eq(value), ptr.field.eq(0)]
            if ptr.output is not None:
                m.d.sync += ptr.output.eq(0)
            rsp.send()
        with m.Else():
            rsp.send(status=Status.RANGE)

    def _write_field(self, m, rsp, ptr, x_wr, t_wr):
        """SAMPLE_WRITE or DATA_WRITE: the next field of the pointer's sample, inputs then targets, into
        the sample's word of x_wr's or t_wr's RAM; refused past the memory's end or out of the format."""
        cfg, value = self.cfg, self.cmd.payload.data
        n0, nL = cfg.layers[0], cfg.layers[-1]
        is_x = ptr.field < n0
        with m.If((ptr.sample >= ptr.depth) |
                  ~Mux(is_x, _fits_signed(value, cfg.x_bits), _fits_signed(value, cfg.y_bits))):
            rsp.send(status=Status.RANGE)
        with m.Else():
            with m.If(is_x):
                m.d.comb += [x_wr.addr.eq(ptr.sample), x_wr.en.eq(C(1, n0) << ptr.field)]
                m.d.comb += [x_wr.data[j].eq(value[:cfg.x_bits]) for j in range(n0)]
            with m.Else():
                m.d.comb += [t_wr.addr.eq(ptr.sample), t_wr.en.eq(C(1, nL) << (ptr.field - n0).as_unsigned())]
                m.d.comb += [t_wr.data[o].eq(value[:cfg.y_bits]) for o in range(nL)]
            with m.If(ptr.field == n0 + nL - 1):
                m.d.sync += [ptr.field.eq(0), ptr.sample.eq(ptr.sample + 1)]
            with m.Else():
                m.d.sync += ptr.field.eq(ptr.field + 1)
            rsp.send()

    def _result_commands(self, m, rsp, counters, read_kind):
        """READ_LOSS, READ_STEP (from their RAMs), READ_COUNTER, CLEAR_COUNTERS."""
        index, KMAX = self.cmd.payload.index, self.cfg.max_directions
        with m.Case(Op.READ_LOSS):
            with m.If(index < 2 * KMAX + 1):
                m.d.sync += read_kind.eq(_READ_LOSS)
                m.next = "CMD_READ"
            with m.Else():
                rsp.send(status=Status.RANGE)
        with m.Case(Op.READ_STEP):
            with m.If(index < KMAX):
                m.d.sync += read_kind.eq(_READ_STEP)
                m.next = "CMD_READ"
            with m.Else():
                rsp.send(status=Status.RANGE)
        with m.Case(Op.READ_COUNTER):
            with m.If(index < len(counters)):
                rsp.send(Array(counters)[index])
            with m.Else():
                rsp.send(status=Status.RANGE)
        with m.Case(Op.CLEAR_COUNTERS):
            m.d.sync += [cnt.eq(0) for cnt in counters]
            rsp.send()

    def _counters(self, m) -> list[Signal]:
        """READ_COUNTER's counters, in Counter's order; they count here, CLEAR_COUNTERS clears them."""
        # 48 bits: 65 days of clocks at 50 MHz, and half the carry chains of 64
        cycles_busy, cycles_last = Signal(48), Signal(48)
        fanout = Signal(48)
        spikes = [Signal(48, name=f"spikes{h}") for h in range(self.H)]
        assert [Counter.CYCLES_BUSY, Counter.CYCLES_LAST, Counter.SPIKE_FANOUT, Counter.SPIKES] == [0, 1, 2, 3]
        fired = self.spikes.payload
        with m.If(self.spikes.valid):
            with m.Switch(fired.layer):
                for h in range(self.H):
                    with m.Case(h):  # a spike of hidden layer h drives a weight addition per neuron of h + 1
                        m.d.sync += [spikes[h].eq(spikes[h] + fired.count),
                                     fanout.eq(fanout + fired.count * self.cfg.layers[h + 2])]
        with m.If(self.busy):
            m.d.sync += [cycles_busy.eq(cycles_busy + 1), cycles_last.eq(cycles_last + 1)]
        return [cycles_busy, cycles_last, fanout] + spikes


def _in_range(value, lo, hi):
    """lo <= value <= hi for a 64-bit value, comparing only the bits a legal value can use."""
    bits = max(hi.bit_length(), 1)
    return (value[bits:] == 0) & (value[:bits] >= lo) & (value[:bits] <= hi)


def _fits_signed(value, bits):
    """value (64-bit two's complement) is in Q(bits): no wide comparator needed."""
    top = value[bits - 1:]
    return (top == 0) | (top == (1 << (64 - bits + 1)) - 1)


class _SamplePointer:
    """A seek's sample in a memory of `depth` samples, its next field (inputs then targets) and, with
    `outputs` (the batch's), its next output (OUTPUT_READ)."""

    def __init__(self, cfg: DeviceConfig, depth: int, outputs: bool = False):
        n0, nL = cfg.layers[0], cfg.layers[-1]
        self.depth = depth
        self.sample, self.field = Signal(range(depth + 1)), Signal(range(n0 + nL))
        self.output = Signal(range(nL)) if outputs else None


class _Run:
    """TRAIN_STEPS: the steps still to run, and the sum of the base losses of those done."""

    def __init__(self, cfg: DeviceConfig):
        self.left = Signal(range(MAX_RUN_STEPS + 1))
        self.total = Signal(cfg.loss_bits + ceil_log2(MAX_RUN_STEPS))


class _ResponseRegister:
    """The response to the command in hand, offered on the stream until it is taken."""

    def __init__(self, m, rsp):
        self.m = m
        self.pending = Signal()
        self.status, self.data = Signal(8), Signal(64)
        m.d.comb += [rsp.valid.eq(self.pending), rsp.payload.status.eq(self.status), rsp.payload.data.eq(self.data)]
        with m.If(rsp.valid & rsp.ready):
            m.d.sync += self.pending.eq(0)

    def send(self, value=0, status=Status.OK):
        self.m.d.sync += [self.pending.eq(1), self.status.eq(status), self.data.eq(value)]
