"""The forward engine: one pass over the batch, group by group, and its loss.

The sequencer starts a pass (`run.start`) with the perturbation's sign and layer; `run.done` marks the
pass's last clock, when `run.loss` holds its loss. Per group of S samples (docs/rtl.md has the clocks):
  LOAD  the group's inputs and targets into the lanes' registers, one sample per clock (skipped while
        the lanes still hold them).
  IN    input currents, once per sample: for each chunk c, for j in inputs + bias:
        acc += w'(j, c) * x[s, j]; then I = sat_u(rsr(acc, x_frac) + b') -> current RAM
        (P multipliers; (n0 + 1) words per chunk).
  With one hidden layer, I goes to the spike-count table (counts.SpikeCountTable) instead, and its
  count, two clocks later, to the count RAM: there is no time loop (COUNT_DRAIN waits for the last
  chunk's counts), and the pass goes on with OUT. With more hidden layers, for each time step t:
  TICK  first hidden layer: U, I -> LIFLanes -> U, one chunk per clock. Chunks with a spike (in a
        sample of the batch) are appended to an event list.
  EVh   hidden layer h >= 1, event-driven: for each chunk c, replay the event list of layer h-1, one
        spiking presynaptic neuron j per clock: acc[s, n] += w'(j, c) in the sample lanes s where j
        spiked; then the bias word, I = sat_u(acc + b'), and the LIF update of chunk c. A silent
        neuron costs nothing: the layer's cost follows the spikes of the layer before, not its width.
  The last hidden layer also counts its spikes per neuron and sample (count RAM).
  OUT   readout from the counts: for each output chunk, for j in last hidden + bias:
        acc += w'(j, c) * count[s, j] (the same P multipliers); y = sat_y(rsr(acc, log2 T) + b').
  LOSS  (y - target)^2 of R = S/8 samples per clock into the loss accumulator; INFER then stores y
        (STORE, one sample per clock).
Membranes and counts need no clearing: at t = 0 the update reads 0 instead of the RAM.

Four stages. The FSM issues one item per clock (RAM addresses, and the item's description into
`issued`). E0, the next clock, when the RAMs return its weight and factor words: they are registered
with the item (`fetched`), so that no read port's output feeds arithmetic in its own clock (the factors'
LUT RAM read, a wide multiplexer, would otherwise lead the perturbation's adder). E1: the perturbed read
w' = sat_w(w + sign * sigma * a_i * b_j) (nothing perturbed is stored), registered. E2: the P
multiply-accumulate lanes, the LIF update or the count lookup's input, with the membrane, current and
count words, which arrive then too. A phase that reads what the last wrote waits for its last item to
reach E2 (`_in_flight`).
"""
from __future__ import annotations

import math

from amaranth import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

from .counts import SpikeCountTable, first_layer_looked_up
from .factors import DirectionFactors
from .fixed import rshift_round, saturate
from .lif import LIFLanes
from .loss import LossAccumulator
from .memories import MemoryMap
from .perturb import FACTOR, PerturbedRead
from .walker import walker_position


class PassControl(wiring.Signature):
    """A pass, from the side that starts it."""

    def __init__(self, cfg: DeviceConfig):
        super().__init__({
            "start": Out(1),  # begin a pass (one clock; also in the clock of `done`, for the next pass)
            # held during the pass:
            "sign": Out(2),  # of the perturbation: 0 none, 1 +sigma, 3 (= -1) -sigma
            "layer": Out(range(cfg.n_layers)),  # layer-wise: the layer the direction perturbs
            "k": Out(range(cfg.max_directions)),  # the direction (its parity: its half of the pass buffer)
            "store_outputs": Out(1),  # write y to the output RAM (INFER: OUTPUT_READ returns them)
            "done": In(1),  # the pass's last clock
            "loss": In(unsigned(cfg.loss_bits)),
        })


class FactorRegisters(wiring.Signature):
    """The direction's factors a_l and b_l as registers (DirectionFactors(registers=True))."""

    def __init__(self, cfg: DeviceConfig):
        members = {}
        for l, (o, i) in enumerate(cfg.layer_shapes):
            members[f"a{l}"] = Out(data.ArrayLayout(FACTOR, o))
            members[f"b{l}"] = Out(data.ArrayLayout(FACTOR, i + 1))
        super().__init__(members)


def spike_report(cfg: DeviceConfig, lanes: int) -> data.StructLayout:
    """A chunk's spikes: its hidden layer, and how many spikes its lanes made (in samples of the batch): at
    most one per lane for a LIF update, T per lane for a looked-up count."""
    return data.StructLayout({"layer": range(cfg.n_layers - 1), "count": range(lanes * cfg.t_steps + 1)})


class _Pass:
    """The registers of a pass, shared by the FSM (which issues) and the datapath (which executes)."""

    def __init__(self, cfg: DeviceConfig, N: int, S: int, chunks: list[int]):
        P, H, L = N * S, cfg.n_layers - 1, cfg.n_layers
        widths = cfg.layers
        # pointers of the issue stage
        self.g_base = Signal(range(cfg.max_batch + S + 1))  # first sample of the group
        # the group's inputs and targets, one register word per sample lane, loaded from the x and t RAMs
        # (LOAD); `held`: they are still those of the group at `held_base` (a batch of one group loads once
        # per command)
        self.xs = [Signal(data.ArrayLayout(signed(cfg.x_bits), widths[0]), name=f"xs{s}") for s in range(S)]
        self.ts = [Signal(data.ArrayLayout(signed(cfg.y_bits), widths[-1]), name=f"ts{s}") for s in range(S)]
        self.ld = Signal(range(S + 1))
        self.ld_valid = Signal()
        self.held, self.held_base = Signal(), Signal.like(self.g_base)
        self.c = Signal(range(max(chunks) + 1))  # chunk being issued
        self.j = Signal(range(max(widths[:-1]) + 2))  # input column being issued
        self.wa = Signal(walker_position(cfg, N)["addr"])
        self.jc, self.jn = Signal(range(chunks[H - 1] + 1)), Signal(range(N))  # last-hidden j = jc * N + jn
        self.t = Signal(range(cfg.t_steps + 1))
        # event replay (hidden layers >= 1): entry e of the previous layer's list, and the neurons of the
        # entry in hand that are still to be sent
        self.e = Signal(range(max(chunks) + 1))
        self.n_events = [Signal(range(chunks[h] + 1), name=f"n_events{h}") for h in range(H)]
        self.pend, self.pend_chunk, self.pend_any = Signal(P), Signal(range(max(chunks))), Signal()
        # loss: output lo = c * N + ln, sample lane ls
        self.ln, self.lo, self.ls = Signal(range(N)), Signal(range(widths[-1] + 1)), Signal(range(S))
        # The item issued last clock, whose RAM words are on the read ports now.
        self.issued = Signal(data.StructLayout({
            "mac": 1, "last": 1, "out": 1,  # input-current / readout multiply-accumulate; last: the bias
            "lif0": 1,  # LIF update of first-hidden-layer chunk `chunk` from its stored current
            "ev": 1, "evb": 1,  # event: masked weight-row add; event-layer bias + LIF update
            "layer": range(L),  # weight layer of the item
            "hidden": range(H),  # hidden layer of a LIF item
            "chunk": range(max(chunks) + 1), "col": range(max(widths[:-1]) + 2), "lane": range(N),
            "mask": S,  # event: the sample lanes in which presynaptic neuron `col` spiked
            "first": 1,  # t == 0: the membrane and the count start from 0
        }))
        # The item a clock behind `issued` (E1), with the words its reads returned in E0: the weight word,
        # its factors and the (signed) sigma the pass perturbs it by; the perturbed weights are formed from
        # these registers and registered into `w_pert`. `executing` (E2) multiplies, accumulates and runs
        # the LIF update with them. The membranes and currents an item reads get their addresses two
        # clocks late, so their words arrive in E2 too (ForwardEngine._late); the counts, a multiplier
        # operand, are read with the weights and registered twice.
        self.fetched = Signal.like(self.issued)
        self.w_word = Signal(data.ArrayLayout(signed(cfg.w_bits), N))
        self.a_word, self.b_value = Signal(data.ArrayLayout(FACTOR, N)), Signal(FACTOR)
        self.signed_sigma = Signal(signed(cfg.w_bits))
        self.executing = Signal.like(self.issued)
        self.w_pert = Signal(data.ArrayLayout(signed(cfg.w_bits), N))
        # the count word, read with the weights (fetched in E1, in E2 as count_word: the LIF's count, and
        # with one sample lane the multiplier's operand)
        self.count_fetched = Signal(data.ArrayLayout(unsigned(cfg.t_shift + 1), P))
        self.count_word = Signal.like(self.count_fetched)
        # each lane's multiplier operand, its input x or spike count. With more than one sample lane it is
        # selected in E1 and registered with w_pert, so that E2's multiply starts from registers (the
        # lanes spread over the die, and the select, the multiplier and the accumulator did not fit one
        # clock of the ECP5's 54 MHz); with one (the iCEBreaker, 73% over its 12 MHz) it is selected in E2
        cbits = cfg.t_shift + 1
        self.registered_operand = S > 1
        self.operand = [Signal(signed(max(cfg.x_bits, cbits + 1)), name=f"operand{p}") for p in range(P)]
        # the datapath's results
        acc_bits = 1 + max(cfg.x_bits + cfg.w_bits + math.ceil(math.log2(widths[0] + 1)),
                           cfg.w_bits + cbits + 1 + math.ceil(math.log2(widths[-2] + 1)),
                           cfg.w_bits + 1 + math.ceil(math.log2(max(widths[1:-1]) + 1)))
        self.acc = [Signal(signed(acc_bits), name=f"acc{p}") for p in range(P)]
        self.cur_word = Signal(data.ArrayLayout(signed(cfg.u_bits), P))  # input-layer currents of a chunk
        self.ev_cur = Signal(data.ArrayLayout(signed(cfg.u_bits), P))  # event-layer currents of a chunk
        self.yreg = Signal(data.ArrayLayout(signed(cfg.y_bits), P))


class ForwardEngine(wiring.Component):
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, memory_map: MemoryMap):
        self.cfg, self.N, self.S = cfg, neuron_lanes, sample_lanes
        self.P = neuron_lanes * sample_lanes
        # (y - target)^2 of R samples per clock, one squarer (a DSP) per 8 sample lanes: LOSS takes
        # min(S, 8) clocks per output, a small part of a group's, without the DSPs small boards lack
        self.loss_lanes = max(1, sample_lanes // 8)
        # With more than one sample lane LOSS selects each clock's pairs among the lanes' registers; the
        # loss then registers their differences before the squares (LOSS_DRAIN: a clock more per pass)
        self.loss_registers_errors = sample_lanes > 1
        self.chunks = [math.ceil(o / neuron_lanes) for o, _ in cfg.layer_shapes]  # of weight layer l's outputs
        # One neuron lane: the factors come from the pass buffer (memories.py), read with the weight; more
        # lanes need N a-values per word, which the registers give.
        self.cached = neuron_lanes == 1
        # One hidden layer: its spike counts are looked up from the input currents (counts.py), with no
        # time loop, no membranes and no LIF update.
        self.looked_up = first_layer_looked_up(cfg)
        L, H = cfg.n_layers, cfg.n_layers - 1
        rams = [f"w{l}_rd" for l in range(L)] + ["x_rd", "t_rd", "y_wr", "count_rd", "count_wr"]
        if not self.looked_up:
            rams += ["i_rd", "i_wr"] + [f"u{h}_{p}" for h in range(H) for p in ("rd", "wr")]
        rams += [f"events{h}_{p}" for h in range(H - 1) for p in ("rd", "wr")]
        rams += ["pass_factors_a_rd", "pass_factors_b_rd"] if self.cached else []
        super().__init__({
            "run": In(PassControl(cfg)),
            "busy": Out(1),
            "batch": In(range(cfg.max_batch + 1)),
            "samples_written": In(1),  # the x or t RAM changed: the samples held in the lanes are stale
            "sigma": In(cfg.w_bits),
            "layerwise": In(1),
            "spikes": Out(stream.Signature(spike_report(cfg, self.P), always_ready=True)),
            **({} if self.cached else {"factors": In(FactorRegisters(cfg))}),
            **memory_map.ports(*rams),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.pert = pert = PerturbedRead(self.cfg, self.N)
        m.submodules.loss = lossacc = LossAccumulator(self.cfg, self.loss_lanes, self.loss_registers_errors)
        p = _Pass(self.cfg, self.N, self.S, self.chunks)
        lane_valid = [p.g_base + s < self.batch for s in range(self.S)]  # samples of the batch
        self._late = {}
        for name in [f"u{h}_rd" for h in range(self.cfg.n_layers - 1)] + ["i_rd"]:
            if hasattr(self, name):
                port = getattr(self, name)
                self._late[name] = early = Signal(len(port.addr), name=f"{name}_addr_early")
                later = Signal.like(early, name=f"{name}_addr_later")
                m.d.sync += [later.eq(early), port.addr.eq(later)]
        # The counts are read with the weights and registered, so that the readout's multiply-accumulate
        # starts from a register, not a block RAM's output.
        m.d.sync += [p.fetched.eq(p.issued), p.executing.eq(p.fetched), p.w_pert.eq(pert.w_pert),
                     p.count_fetched.eq(self.count_rd.data), p.count_word.eq(p.count_fetched)]
        self._input_registers(m, p)
        self._perturbed_read(m, p, pert)
        self._mac_stage(m, p, pert)
        if self.looked_up:
            m.submodules.counts = counts = SpikeCountTable(self.cfg, self.P, range(self.chunks[0]))
            self._count_stage(m, p, counts, lane_valid)
        else:
            m.submodules.lif = lif = LIFLanes(self.cfg, self.P)
            self._lif_stage(m, p, lif, lane_valid)
        m.d.comb += self.run.loss.eq(lossacc.loss)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.run.start):
                    self._start_pass(m, p, lossacc)
            self._load_phase(m, p)
            self._input_phase(m, p, counts if self.looked_up else None)
            if not self.looked_up:
                self._first_hidden_phase(m, p)
            for h in range(1, self.cfg.n_layers - 1):
                self._event_phase(m, p, h)
            self._readout_phase(m, p)
            self._loss_phase(m, p, lossacc, lane_valid)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

    # ---- the datapath: executes the issued item -----------------------------------------------------

    def _input_registers(self, m, p):
        """The lanes' sample registers: a loaded sample shifts in; a write to the sample RAMs makes them stale."""
        S = self.S
        with m.If(self.samples_written):
            m.d.sync += p.held.eq(0)
        m.d.sync += p.ld_valid.eq(0)
        with m.If(p.ld_valid):
            m.d.sync += [p.xs[s].eq(p.xs[s + 1]) for s in range(S - 1)] + [p.xs[S - 1].eq(self.x_rd.data)]
            m.d.sync += [p.ts[s].eq(p.ts[s + 1]) for s in range(S - 1)] + [p.ts[S - 1].eq(self.t_rd.data)]

    def _perturbed_read(self, m, p, pert):
        """w' of the issued item's weight word: the factors of its output chunk and input column, which
        arrive with the word in E0 and are registered; w' is formed from the registers in E1."""
        cfg, N, op = self.cfg, self.N, p.issued
        sig = Signal(signed(cfg.w_bits + 1))
        m.d.comb += sig.eq(Mux(self.run.sign == 1, self.sigma, Mux(self.run.sign == 3, -self.sigma, 0)))
        with m.Switch(op.layer):
            for l, (o, i) in enumerate(cfg.layer_shapes):
                with m.Case(l):
                    m.d.sync += [p.w_word.eq(getattr(self, f"w{l}_rd").data),  # perturbed layers only:
                                 p.signed_sigma.eq(Mux(~self.layerwise | (self.run.layer == l), sig, 0))]
                    if self.cached:  # from the pass buffer
                        m.d.sync += [p.a_word.eq(self.pass_factors_a_rd.data), p.b_value.eq(self.pass_factors_b_rd.data)]
                    else:
                        a, b = getattr(self.factors, f"a{l}"), getattr(self.factors, f"b{l}")
                        a_chunks = Array([Cat(*[a[cc * N + n] if cc * N + n < o else C(0, 3) for n in range(N)])
                                          for cc in range(self.chunks[l])])
                        m.d.sync += [p.a_word.eq(a_chunks[op.chunk]), p.b_value.eq(Array([b[k] for k in range(i + 1)])[op.col])]
        m.d.comb += [pert.w.eq(p.w_word), pert.a.eq(p.a_word), pert.b.eq(p.b_value), pert.signed_sigma.eq(p.signed_sigma)]

    def _fetch_factors(self, m, l, chunk, col):
        """One neuron lane: the read addresses of a_l[chunk] and b_l[col] in the pass buffer's half of
        direction k, issued with the weight's."""
        if self.cached:
            start, o = DirectionFactors.slot_starts(self.cfg)[l], self.cfg.layer_shapes[l][0]
            half = DirectionFactors.pass_buffer_half(self.cfg, self.run.k)
            m.d.comb += [self.pass_factors_a_rd.addr.eq(half + start + chunk),
                         self.pass_factors_b_rd.addr.eq(half + (start + o) + col)]

    def _active(self, op):
        """An item that computes (not a bubble)."""
        return op.mac | op.lif0 | op.ev | op.evb

    def _in_flight(self, p):
        """An item issued that has not reached E2 yet (so its results are not written)."""
        return self._active(p.issued) | self._active(p.fetched)

    def _mac_stage(self, m, p, pert):
        """P multiply-accumulates: input currents (x) or readout (spike counts); masked adds of events."""
        cfg, N, op, w_pert = self.cfg, self.N, p.executing, p.w_pert
        for lane in range(self.P):
            s, n = divmod(lane, N)
            acc = p.acc[lane]
            # E2's operand, from E1's item and registered, or from E2's own
            at, counts, domain = (p.fetched, p.count_fetched, "sync") if p.registered_operand else (op, p.count_word, "comb")
            count = Array([counts[s * N + k] for k in range(N)])[at.lane]  # last-hidden at.col, sample s
            x = Array([p.xs[s][j] for j in range(cfg.layers[0])])[at.col]  # input col of sample s
            m.d[domain] += p.operand[lane].eq(Mux(at.out, Cat(count, C(0, 1)).as_signed(), x))
            prod = w_pert[n] * p.operand[lane]
            m.d.comb += [p.cur_word[lane].eq(saturate(rshift_round(acc, cfg.x_frac) + w_pert[n], cfg.u_bits)),
                         p.ev_cur[lane].eq(saturate(acc + w_pert[n], cfg.u_bits))]
            with m.If(op.mac):
                with m.If(op.last):
                    m.d.sync += acc.eq(0)
                    with m.If(op.out):
                        m.d.sync += p.yreg[lane].eq(saturate(rshift_round(acc, cfg.t_shift) + w_pert[n],
                                                             cfg.y_bits))
                with m.Else():
                    m.d.sync += acc.eq(acc + prod)
            with m.If(op.ev & op.mask[s]):
                m.d.sync += acc.eq(acc + w_pert[n])
            with m.If(op.evb):
                m.d.sync += acc.eq(0)
        if not self.looked_up:  # (with a looked-up first layer, _count_stage takes the currents)
            with m.If(op.mac & op.last & ~op.out):  # a chunk's input currents are complete
                m.d.comb += [self.i_wr.addr.eq(op.chunk), self.i_wr.data.eq(p.cur_word), self.i_wr.en.eq(1)]

    def _count_stage(self, m, p, counts, lane_valid):
        """One hidden layer: a chunk's input currents, when complete, go to the spike-count table; its
        counts, two clocks later, to the count RAM (the readout's input) and the spike counter."""
        N, op = self.N, p.executing
        m.d.comb += [counts.valid.eq(op.mac & op.last & ~op.out), counts.cur.eq(p.cur_word), counts.tag.eq(op.chunk)]
        with m.If(counts.out_valid):
            m.d.comb += [self.count_wr.addr.eq(counts.out_tag), self.count_wr.data.eq(counts.count),
                         self.count_wr.en.eq(1)]
        self._report_spikes(m, counts.out_valid, 0, [Mux(lane_valid[q // N], counts.count[q], 0) for q in range(self.P)])

    def _report_spikes(self, m, valid, layer, per_lane, group=8):
        """The spike report of a chunk (for the counters, which need no hurry), its sum over the lanes
        pipelined: the lanes' counts registered, summed by groups of `group` lanes into registers, then
        summed into the report, three clocks after `valid`. So a P-lane adder tree is not in series with
        the count table's block RAM read or the LIF update."""
        P = self.P
        width = len(self.spikes.payload.count)
        lanes = [Signal(width, name=f"spikes_lane{q}") for q in range(P)]
        groups = [Signal(width, name=f"spikes_group{g}") for g in range(-(-P // group))]
        valids = [Signal(name=f"spikes_valid{k}") for k in range(2)]
        layers = [Signal(len(self.spikes.payload.layer), name=f"spikes_layer{k}") for k in range(2)]
        m.d.sync += [valids[0].eq(valid), layers[0].eq(layer), valids[1].eq(valids[0]), layers[1].eq(layers[0])]
        m.d.sync += [lanes[q].eq(per_lane[q]) for q in range(P)]
        m.d.sync += [groups[g].eq(sum(lanes[g * group:(g + 1) * group])) for g in range(len(groups))]
        m.d.sync += [self.spikes.valid.eq(valids[1]), self.spikes.payload.layer.eq(layers[1]),
                     self.spikes.payload.count.eq(sum(groups))]

    def _lif_stage(self, m, p, lif, lane_valid):
        """A chunk of hidden layer `hidden`, its current from the current RAM or the events: the LIF update,
        membranes back, spike counts (last hidden layer) or the event list (the others)."""
        H, N, op = self.cfg.n_layers - 1, self.N, p.executing
        u_rd = [getattr(self, f"u{h}_rd") for h in range(H)]
        with m.Switch(op.hidden):
            for h in range(H):
                with m.Case(h):
                    m.d.comb += lif.u.eq(Mux(op.first, 0, u_rd[h].data.as_value()))
        if H == 1:  # no event layers: no path from the accumulators into the LIF update to time
            m.d.comb += lif.cur.eq(self.i_rd.data.as_value())
        else:
            m.d.comb += lif.cur.eq(Mux(op.lif0, self.i_rd.data.as_value(), p.ev_cur.as_value()))
        fired_bits = Cat(*[lif.spike[q] & lane_valid[q // N] for q in range(self.P)])
        self._report_spikes(m, op.lif0 | op.evb, op.hidden, [fired_bits[q] for q in range(self.P)])
        with m.If(op.lif0 | op.evb):
            with m.Switch(op.hidden):
                for h in range(H):
                    with m.Case(h):
                        u_wr = getattr(self, f"u{h}_wr")
                        m.d.comb += [u_wr.addr.eq(op.chunk), u_wr.data.eq(lif.u_next), u_wr.en.eq(1)]
                        if h == H - 1:
                            m.d.comb += [self.count_wr.addr.eq(op.chunk), self.count_wr.en.eq(1)]
                            m.d.comb += [self.count_wr.data[q].eq(Mux(op.first, 0, p.count_word[q]) + lif.spike[q])
                                         for q in range(self.P)]
                        else:
                            ev_wr = getattr(self, f"events{h}_wr")
                            with m.If(fired_bits.any()):
                                m.d.comb += [ev_wr.addr.eq(p.n_events[h]), ev_wr.en.eq(1),
                                             ev_wr.data.chunk.eq(op.chunk), ev_wr.data.bits.eq(fired_bits)]
                                m.d.sync += p.n_events[h].eq(p.n_events[h] + 1)

    # ---- the FSM: issues one item per clock -----------------------------------------------------------

    def _start_pass(self, m, p, lossacc):
        m.d.sync += [p.g_base.eq(0), p.c.eq(0), p.j.eq(0), p.wa.eq(0), p.ld.eq(0)]
        m.d.comb += lossacc.clear.eq(1)
        m.next = "LOAD"

    def _load_phase(self, m, p):
        """The group's samples (inputs and targets) into the lanes' registers, one per clock (skipped when
        they are held already); each arrives the clock after its read and shifts in, so after S reads lane
        s holds sample g_base + s. The last one lands as IN issues its first item, which executes later."""
        S = self.S
        with m.State("LOAD"):
            with m.If(p.held & (p.held_base == p.g_base)):
                m.next = "IN"
            with m.Else():
                m.d.comb += [self.x_rd.addr.eq(p.g_base + p.ld), self.t_rd.addr.eq(p.g_base + p.ld)]
                m.d.sync += [p.ld_valid.eq(1), p.ld.eq(p.ld + 1)]
                with m.If(p.ld == S - 1):
                    m.d.sync += [p.held.eq(~self.samples_written), p.held_base.eq(p.g_base), p.ld.eq(0)]
                    m.next = "IN"

    def _start_event_layer(self, m, p, h):
        m.d.comb += getattr(self, f"events{h - 1}_rd").addr.eq(0)  # the first entry's data arrives as the layer starts
        m.d.sync += [p.c.eq(0), p.e.eq(0), p.pend_any.eq(0), p.n_events[h].eq(0)]
        m.next = f"EV{h}"

    def _start_readout(self, m, p):
        m.d.sync += [p.c.eq(0), p.j.eq(0), p.wa.eq(0), p.jc.eq(0), p.jn.eq(0), p.lo.eq(0)]
        m.next = "OUT"

    def _input_phase(self, m, p, counts):
        n0, C0, op = self.cfg.layers[0], self.chunks[0], p.issued
        with m.State("IN"):  # input currents of chunk c: inputs j = 0..n0-1, then the bias
            m.d.comb += self.w0_rd.addr.eq(p.wa)
            self._fetch_factors(m, 0, p.c, p.j)
            m.d.sync += [op.mac.eq(1), op.last.eq(p.j == n0), op.out.eq(0), op.layer.eq(0),
                         op.chunk.eq(p.c), op.col.eq(p.j)]
            with m.If(p.j == n0):
                m.d.sync += [p.j.eq(0), p.c.eq(p.c + 1), p.wa.eq(p.c + 1)]
                with m.If(p.c == C0 - 1):
                    m.next = "IN_DRAIN"
            with m.Else():
                m.d.sync += [p.j.eq(p.j + 1), p.wa.eq(p.wa + C0)]
        with m.State("IN_DRAIN"):
            m.d.sync += [op.mac.eq(0), p.c.eq(0), p.t.eq(0), p.n_events[0].eq(0)]
            m.next = "COUNT_DRAIN" if counts is not None else "TICK"
        if counts is not None:
            with m.State("COUNT_DRAIN"):  # the last chunk's currents and counts are on their way to the count RAM
                with m.If(~counts.busy & ~self._in_flight(p) & ~self._active(p.executing)):
                    self._start_readout(m, p)

    def _first_hidden_phase(self, m, p):
        """(Two or more hidden layers.) First hidden layer, time step t: one chunk per clock."""
        C0, op = self.chunks[0], p.issued
        with m.State("TICK"):  # first hidden layer, time step t, chunk c
            m.d.comb += [self._late["u0_rd"].eq(p.c), self._late["i_rd"].eq(p.c)]
            m.d.sync += [op.lif0.eq(1), op.hidden.eq(0), op.chunk.eq(p.c), op.first.eq(p.t == 0)]
            with m.If(p.c == C0 - 1):
                m.d.sync += p.c.eq(0)
                m.next = "TICK_DRAIN"
            with m.Else():
                m.d.sync += p.c.eq(p.c + 1)
        with m.State("TICK_DRAIN"):  # the next layer starts when the last chunk's events are written
            m.d.sync += op.lif0.eq(0)
            with m.If(~self._in_flight(p)):
                self._start_event_layer(m, p, 1)

    def _event_phase(self, m, p, h):
        """Hidden layer h, chunk c: replay the events of layer h-1 (one presynaptic neuron per clock: its
        weight word is added in the sample lanes where it spiked), then the bias word and the LIF update.
        Each list entry is a chunk with spikes; its neurons are sent lowest first."""
        N, S, H, op = self.N, self.S, self.cfg.n_layers - 1, p.issued
        Ch, n_prev = self.chunks[h], self.cfg.layers[h]
        evr, w_rd = getattr(self, f"events{h - 1}_rd"), getattr(self, f"w{h}_rd")
        with m.State(f"EV{h}"):
            src_bits = Mux(p.pend_any, p.pend, evr.data.bits)
            src_chunk = Mux(p.pend_any, p.pend_chunk, evr.data.chunk)
            have = p.pend_any | (p.e < p.n_events[h - 1])
            nsel = Signal(range(N), name=f"ev{h}_neuron")
            for n in reversed(range(N)):
                with m.If(Cat(*[src_bits[s * N + n] for s in range(S)]).any()):
                    m.d.comb += nsel.eq(n)
            mask = Cat(*[Array([src_bits[s * N + k] for k in range(N)])[nsel] for s in range(S)])
            rest = Cat(*[src_bits[q] & (nsel != q % N) for q in range(self.P)])
            j_ev = src_chunk * N + nsel
            m.d.comb += evr.addr.eq(p.e)
            with m.If(have):
                m.d.comb += w_rd.addr.eq(j_ev * Ch + p.c)
                self._fetch_factors(m, h, p.c, j_ev)
                m.d.sync += [op.ev.eq(1), op.evb.eq(0), op.layer.eq(h), op.chunk.eq(p.c), op.col.eq(j_ev),
                             op.mask.eq(mask), p.pend.eq(rest), p.pend_chunk.eq(src_chunk), p.pend_any.eq(rest.any())]
                with m.If(~p.pend_any):  # the fetched entry was taken: fetch the next
                    m.d.sync += p.e.eq(p.e + 1)
                    m.d.comb += evr.addr.eq(p.e + 1)
            with m.Else():
                m.d.comb += [w_rd.addr.eq(n_prev * Ch + p.c), self._late[f"u{h}_rd"].eq(p.c), evr.addr.eq(0)]
                self._fetch_factors(m, h, p.c, n_prev)
                if h == H - 1:
                    m.d.comb += self.count_rd.addr.eq(p.c)
                m.d.sync += [op.ev.eq(0), op.evb.eq(1), op.layer.eq(h), op.hidden.eq(h), op.chunk.eq(p.c),
                             op.col.eq(n_prev), op.first.eq(p.t == 0), p.e.eq(0)]
                with m.If(p.c == Ch - 1):
                    m.next = f"EV{h}_DRAIN"
                with m.Else():
                    m.d.sync += p.c.eq(p.c + 1)
        with m.State(f"EV{h}_DRAIN"):  # what follows starts when the last chunk's results are written
            m.d.sync += [op.ev.eq(0), op.evb.eq(0)]
            with m.If(~self._in_flight(p)):
                if h < H - 1:
                    self._start_event_layer(m, p, h + 1)
                else:
                    m.d.sync += p.t.eq(p.t + 1)
                    with m.If(p.t == self.cfg.t_steps - 1):
                        self._start_readout(m, p)
                    with m.Else():
                        m.d.sync += [p.c.eq(0), p.n_events[0].eq(0)]
                        m.next = "TICK"

    def _readout_phase(self, m, p):
        H, N, CR, n_last, op = self.cfg.n_layers - 1, self.N, self.chunks[-1], self.cfg.layers[-2], p.issued
        with m.State("OUT"):  # readout of output chunk c from the spike counts of the last hidden layer
            m.d.comb += [getattr(self, f"w{H}_rd").addr.eq(p.wa), self.count_rd.addr.eq(p.jc)]
            self._fetch_factors(m, H, p.c, p.j)
            m.d.sync += [op.mac.eq(1), op.last.eq(p.j == n_last), op.out.eq(1), op.layer.eq(H),
                         op.chunk.eq(p.c), op.col.eq(p.j), op.lane.eq(p.jn)]
            with m.If(p.j == n_last):
                m.next = "OUT_DRAIN"
            with m.Else():
                m.d.sync += [p.j.eq(p.j + 1), p.wa.eq(p.wa + CR)]
                with m.If(p.jn == N - 1):
                    m.d.sync += [p.jn.eq(0), p.jc.eq(p.jc + 1)]
                with m.Else():
                    m.d.sync += p.jn.eq(p.jn + 1)
        with m.State("OUT_DRAIN"):  # LOSS starts when the last readout item has written its y
            m.d.sync += [op.mac.eq(0), p.ln.eq(0), p.ls.eq(0)]
            with m.If(~self._in_flight(p)):
                m.next = "LOSS"

    def _loss_phase(self, m, p, lossacc, lane_valid):
        """The outputs of the group, one chunk after each readout: for output lo = c * N + ln, the squared
        errors of R samples per clock into the loss (their y in the lanes' registers, their targets held
        since LOAD); in INFER, then y into the output RAM, one sample per clock. Then the next output,
        chunk or group, or the pass's end."""
        N, S, R, nL = self.N, self.S, self.loss_lanes, self.cfg.layers[-1]
        groups = -(-S // R)
        ys = [Array([p.yreg[s * N + k] for k in range(N)])[p.ln] for s in range(S)]  # output lo of sample s
        targets = [Array([p.ts[s][o] for o in range(nL)])[p.lo] for s in range(S)]
        with m.State("LOSS"):  # samples ls * R .. ls * R + R - 1 of output lo
            for r in range(R):
                def pick(values):  # sample ls * R + r's value (0 past the last lane)
                    return Array([values[g * R + r] if g * R + r < S else 0 for g in range(groups)])[p.ls]
                m.d.comb += [lossacc.valid[r].eq(pick(lane_valid)), lossacc.y[r].eq(pick(ys)),
                             lossacc.target[r].eq(pick(targets))]
            m.d.sync += p.ls.eq(p.ls + 1)
            with m.If(p.ls == groups - 1):
                m.d.sync += p.ls.eq(0)
                with m.If(self.run.store_outputs):
                    m.next = "STORE"
                with m.Else():
                    self._next_output(m, p)
        with m.State("STORE"):  # INFER: sample ls's output lo into the output RAM
            m.d.comb += [self.y_wr.addr.eq(p.g_base + p.ls)]
            m.d.comb += [self.y_wr.data[o].eq(Array(ys)[p.ls]) for o in range(nL)]
            with m.If(Array(lane_valid)[p.ls]):  # for the samples of the batch
                m.d.comb += self.y_wr.en.eq(C(1, nL) << p.lo)
            m.d.sync += p.ls.eq(p.ls + 1)
            with m.If(p.ls == S - 1):
                m.d.sync += p.ls.eq(0)
                self._next_output(m, p)

        with m.State("GROUP_END"):
            m.d.sync += [p.g_base.eq(p.g_base + self.S), p.c.eq(0), p.j.eq(0), p.wa.eq(0), p.ld.eq(0)]
            with m.If(p.g_base + self.S < self.batch):
                m.next = "LOAD"
            with m.Else():
                m.next = "LOSS_DRAIN" if self.loss_registers_errors else "PASS_END"
        with m.State("LOSS_DRAIN"):  # the last pair's square reaches the loss (a clock whatever its lane)
            m.next = "PASS_END"
        with m.State("PASS_END"):  # run.loss is the pass's; the sequencer may start the next pass now
            m.d.comb += self.run.done.eq(1)
            with m.If(self.run.start):
                self._start_pass(m, p, lossacc)
            with m.Else():
                m.next = "IDLE"

    def _next_output(self, m, p):
        """After output lo: the chunk's next output, the next output chunk's readout, or the group's end."""
        N, CR, nL = self.N, self.chunks[-1], self.cfg.layers[-1]
        m.d.sync += [p.ln.eq(p.ln + 1), p.lo.eq(p.lo + 1)]
        with m.If((p.ln == N - 1) | (p.lo == nL - 1)):  # chunk done
            with m.If(p.c == CR - 1):
                m.next = "GROUP_END"
            with m.Else():
                m.d.sync += [p.c.eq(p.c + 1), p.j.eq(0), p.wa.eq(p.c + 1), p.jc.eq(0), p.jn.eq(0)]
                m.next = "OUT"
        with m.Else():
            m.next = "LOSS"
