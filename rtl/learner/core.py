"""The learner: the LIF core array, its noise and its perturbation-update unit behind one command stream.

It computes what docs/fixed-point.md defines (bit-exact with rfsnn.sim.golden) and trains on its own:
the host loads weights and a batch, sends step parameters and TRAIN_STEP, and reads losses back; no
weight crosses the link during a step.

Lanes. P = neuron_lanes (N) x sample_lanes (S) arithmetic lanes, lane p = s * N + n. A weight RAM word
holds N weights of one presynaptic input j for N consecutive output neurons (word (j, c) = weights
A[c*N + n, j]), so one read feeds the N neurons of chunk c for all S samples of a group at once.
Batches run in groups of S samples.

A forward pass over a group:
  IN    input currents, once per sample: for each chunk c, for j in inputs + bias:
        acc += w'(j, c) * x[s, j]; then I = sat_u(rsr(acc, x_frac) + b') -> current RAM
        (P multipliers; (n0 + 1) words per chunk).
  then for each time step t:
  TICK  first hidden layer: U, I -> LIFLanes -> U, one chunk per clock. Chunks with a spike (in a
        sample of the batch) are appended to an event list. With one hidden layer the time steps
        follow each other without a gap.
  EVh   hidden layer h >= 1, event-driven: for each chunk c, replay the event list of layer h-1, one
        spiking presynaptic neuron j per clock: acc[s, n] += w'(j, c) in the sample lanes s where j
        spiked; then the bias word, I = sat_u(acc + b'), and the LIF update of chunk c. A silent
        neuron costs nothing: the layer's cost follows the spikes of the layer before, not its width.
  The last hidden layer also counts its spikes per neuron and sample (count RAM).
  OUT   readout from the counts: for each output chunk, for j in last hidden + bias:
        acc += w'(j, c) * count[s, j] (the same P multipliers); y = sat_y(rsr(acc, log2 T) + b').
  LOSS  y -> output RAM; (y - target)^2 into the loss accumulator, one pair per clock.
Membranes and counts need no clearing: at t = 0 the update reads 0 instead of the RAM.
w' = sat_w(w + sign * sigma * a_i * b_j) is formed as each word is read (PerturbedRead); nothing
perturbed is stored.

A training step: for each direction k, draw its factors from the LFSR (DirectionFactors), also into a
small factor cache (K x 133 values for 2-64-1; the contract's "optional factor cache"), run the +
and - (or + only, after one unperturbed base pass) passes, and turn the loss difference into the
scalar step (StepUnit). Then the update pass walks the weights in canonical order: per weight,
delta = sum_k step_k a_k[i] b_k[j] (one direction per clock from the cache), r = the next step_frac
stream bits (the LFSR simply continues past the directions, as the contract orders), and
w <- sat_w(w - ((delta + r) >> step_frac)) (UpdateLanes).

"""
from __future__ import annotations

import math

from amaranth import Array, C, Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.commands import Counter, Op, Reg, Status, info_words
from rfsnn.sim.contract.config import ConfigError, DeviceConfig, register_limits

from ..commands import COMMAND, RESPONSE
from .factors import DirectionFactors
from .fixed import rshift_round, saturate
from .lif import LIFLanes
from .loss import LossAccumulator
from .perturb import FACTOR, PerturbedRead
from .update import StepUnit, UpdateLanes, delta_bits


class Learner(wiring.Component):
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int = 1, sample_lanes: int = 8):
        self.check_lanes(cfg, neuron_lanes, sample_lanes)
        self.cfg, self.N, self.S = cfg, neuron_lanes, sample_lanes
        self.P = neuron_lanes * sample_lanes
        self.chunks = [math.ceil(o / neuron_lanes) for o, _ in cfg.layer_shapes]
        self.groups = math.ceil(cfg.max_batch / sample_lanes)
        self.info = info_words(cfg, neuron_lanes, sample_lanes)
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "rsp": Out(stream.Signature(RESPONSE)),
            "busy": Out(1),
        })

    def memory_map(self) -> dict[str, tuple[int, int]]:
        """Every RAM of this build: name -> (depth, word width in bits)."""
        self.elaborate(None)
        return dict(self.memories)

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
        cfg, N, S, P = self.cfg, self.N, self.S, self.P
        L = cfg.n_layers
        H = L - 1  # hidden LIF layers; hidden h is fed by weight layer h, the readout by weight layer H
        widths = cfg.layers  # widths[h + 1] is hidden h
        n0, nL, n_last = widths[0], widths[-1], widths[-2]
        Ch = self.chunks  # Ch[h]: chunks of the outputs of weight layer h
        C0, CR = Ch[0], Ch[H]
        F = cfg.step_frac
        KMAX = cfg.max_directions
        limits = register_limits(cfg)  # what SET accepts, register by register
        FPD = DirectionFactors.factors_per_direction(cfg)
        starts = DirectionFactors.slot_starts(cfg)
        s_shift = S.bit_length() - 1
        cbits = cfg.t_shift + 1  # spike count 0..T

        # ---- blocks ---------------------------------------------------------------------------------
        # One neuron lane: the passes read this direction's factors from the factor cache, not registers.
        cached = N == 1
        m.submodules.factors = fac = DirectionFactors(cfg, registers=not cached)
        m.submodules.pert = pert = PerturbedRead(cfg, N)
        m.submodules.lif = lif = LIFLanes(cfg, P)
        m.submodules.loss = lossacc = LossAccumulator(cfg)
        m.submodules.stepu = stepu = StepUnit(cfg)
        m.submodules.upd = upd = UpdateLanes(cfg, 1)

        # ---- memories -------------------------------------------------------------------------------
        self.memories = {}  # name -> (depth, width in bits), for reports

        def mem(name, shape, depth):
            # Block RAM even when small: yosys would build the small ones from flip-flops and read
            # multiplexers, which cost the iCE40 hundreds of logic cells; block RAMs are to spare.
            m.submodules[name] = memory = Memory(shape=shape, depth=depth, init=[], attrs={"ram_style": "block"})
            self.memories[name] = (depth, Shape.cast(shape).width)
            return memory

        w_word = data.ArrayLayout(signed(cfg.w_bits), N)
        w_mem = [mem(f"w{l}_mem", w_word, (i + 1) * self.chunks[l]) for l, (o, i) in enumerate(cfg.layer_shapes)]
        w_wr = [mm.write_port(granularity=1) for mm in w_mem]
        w_rd = [mm.read_port() for mm in w_mem]
        x_mem = mem("x_mem", data.ArrayLayout(signed(cfg.x_bits), S), self.groups * n0)
        t_mem = mem("t_mem", data.ArrayLayout(signed(cfg.y_bits), S), self.groups * nL)
        y_mem = mem("y_mem", data.ArrayLayout(signed(cfg.y_bits), S), self.groups * nL)
        x_wr, t_wr, y_wr = (mm.write_port(granularity=1) for mm in (x_mem, t_mem, y_mem))
        x_rd, t_rd, y_rd = x_mem.read_port(), t_mem.read_port(), y_mem.read_port()
        u_word = data.ArrayLayout(signed(cfg.u_bits), P)
        i_mem = mem("i_mem", u_word, C0)  # input currents of the first hidden layer
        i_wr, i_rd = i_mem.write_port(), i_mem.read_port()
        u_mem = [mem(f"u{h}_mem", u_word, Ch[h]) for h in range(H)]  # membranes
        u_wr = [mm.write_port() for mm in u_mem]
        # Transparent only with a single chunk: a membrane is then read in the clock its last update is
        # written. Otherwise the two never meet, and a block RAM cannot be transparent without extra logic.
        def bypass(port, chunks):
            return (port,) if chunks == 1 else ()
        u_rd = [mm.read_port(transparent_for=bypass(wp, Ch[h])) for h, (mm, wp) in enumerate(zip(u_mem, u_wr))]
        n_mem = mem("count_mem", data.ArrayLayout(unsigned(cbits), P), Ch[H - 1])  # spike counts, last hidden
        n_wr = n_mem.write_port()
        n_rd = n_mem.read_port(transparent_for=bypass(n_wr, Ch[H - 1]))
        # Event lists: the chunks of hidden layer h (h < H-1) that spiked in this time step, compacted
        # (silent chunks are not stored, so the next layer's cost follows the spikes, not the width).
        ev_layout = [data.StructLayout({"chunk": range(Ch[h]), "bits": P}) for h in range(H)]
        ev_mem = [mem(f"events{h}_mem", ev_layout[h], Ch[h]) for h in range(H - 1)]
        ev_wr = [mm.write_port() for mm in ev_mem]
        ev_rd = [mm.read_port(transparent_for=(wp,)) for mm, wp in zip(ev_mem, ev_wr)]
        f_mem = mem("factor_cache", FACTOR, KMAX * FPD)
        f_wr, fa_rd, fb_rd = f_mem.write_port(), f_mem.read_port(), f_mem.read_port()
        loss_mem = mem("loss_mem", unsigned(cfg.loss_bits), 2 * KMAX + 1)
        l_wr, l_rd = loss_mem.write_port(), loss_mem.read_port()
        step_mem = mem("step_mem", signed(cfg.step_bits), KMAX)
        s_wr, s_rd = step_mem.write_port(), step_mem.read_port()

        # ---- host-set registers -----------------------------------------------------------------------
        batch = Signal(range(cfg.max_batch + 1), init=1)
        seed = Signal(32)
        n_dirs = Signal(range(KMAX + 1), init=1)
        sigma = Signal(cfg.w_bits, init=64)
        gain_mant = Signal(cfg.gain_bits)
        gain_shift = Signal(6, init=1)
        clip = Signal(cfg.step_bits - 1)
        mode = Signal(4)
        layer_start = Signal(range(L))
        gauss4, forward = mode[0], mode[1]
        layerwise, sr = mode[2], mode[3]

        # ---- counters ---------------------------------------------------------------------------------
        # 48 bits: 65 days of clocks at 50 MHz, and half the carry chains of 64
        cycles_busy, cycles_last = Signal(48), Signal(48)
        synops = Signal(48)
        spikes = [Signal(48, name=f"spikes{h}") for h in range(H)]
        counters = [cycles_busy, cycles_last, synops] + spikes
        assert [Counter.CYCLES_BUSY, Counter.CYCLES_LAST, Counter.SYNAPTIC_OPS, Counter.SPIKES] == [0, 1, 2, 3]

        # ---- response register ------------------------------------------------------------------------
        rsp_pending = Signal()
        rsp_status, rsp_data = Signal(8), Signal(64)
        m.d.comb += [self.rsp.valid.eq(rsp_pending), self.rsp.payload.status.eq(rsp_status),
                     self.rsp.payload.data.eq(rsp_data)]
        with m.If(self.rsp.valid & self.rsp.ready):
            m.d.sync += rsp_pending.eq(0)

        def respond(value=0, status=Status.OK):
            m.d.sync += [rsp_pending.eq(1), rsp_status.eq(status), rsp_data.eq(value)]

        # ---- canonical parameter walker (host access and the update pass) -----------------------------
        wl = Signal(range(L))  # layer
        wi, wj = Signal(range(max(widths[1:]) + 1)), Signal(range(max(widths[:-1]) + 2))  # row (output), column
        wchunk, wlane = Signal(range(max(self.chunks) + 1)), Signal(range(N))
        waddr = Signal(range(max((i + 1) * c for (o, i), c in zip(cfg.layer_shapes, self.chunks)) + 1))
        wdone = Signal()
        n_in = Array([C(i, wj.shape()) for _, i in cfg.layer_shapes])
        n_out = Array([C(o, wi.shape()) for o, _ in cfg.layer_shapes])
        chunks_of = Array([C(c, waddr.shape()) for c in self.chunks])

        def walker_reset():
            m.d.sync += [wl.eq(0), wi.eq(0), wj.eq(0), wchunk.eq(0), wlane.eq(0), waddr.eq(0), wdone.eq(0)]

        def walker_advance():
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

        w_rd_word = Signal(w_word)  # the walker's word, from its layer's RAM
        for l in range(L):
            with m.If(wl == l):
                m.d.comb += w_rd_word.eq(w_rd[l].data)
        w_at_walker = Array([w_rd_word[n] for n in range(N)])[wlane]

        def write_walker_weight(value):
            for l in range(L):
                with m.If(wl == l):
                    m.d.comb += [w_wr[l].addr.eq(waddr), w_wr[l].en.eq(C(1, N) << wlane)]
                    m.d.comb += [w_wr[l].data[n].eq(value) for n in range(N)]

        # ---- sample pointer ---------------------------------------------------------------------------
        sb = Signal(range(cfg.max_batch + 1))  # sample
        sf = Signal(range(n0 + nL))  # field: inputs then targets
        so = Signal(range(nL))  # output field for OUTPUT_READ
        s_group, s_lane = sb >> s_shift, sb[:s_shift] if s_shift else C(0, 1)

        # ---- forward-pass state -----------------------------------------------------------------------
        sign = Signal(2)  # 0: unperturbed, 1: +sigma, 3 (= -1): -sigma
        infer = Signal()
        dir_layer = Signal(range(L))  # layer-wise: the layer this direction perturbs
        g_base = Signal(range(cfg.max_batch + S + 1))
        gx, gy = Signal(range(self.groups * n0 + 1)), Signal(range(self.groups * nL + 1))
        lane_valid = [g_base + s < batch for s in range(S)]
        c = Signal(range(max(Ch) + 1))  # chunk being issued
        j = Signal(range(max(widths[:-1]) + 2))  # input column being issued
        wa = Signal(waddr.shape())
        xa = Signal(range(self.groups * n0 + 1))
        jc, jn = Signal(range(Ch[H - 1] + 1)), Signal(range(N))  # last-hidden neuron j = jc * N + jn (counts)
        t = Signal(range(cfg.t_steps + 1))
        # event replay (hidden layers >= 1): entry e of the previous layer's list, and the neurons of the
        # entry in hand that are still to be sent
        e = Signal(range(max(Ch) + 1))
        n_events = [Signal(range(Ch[h] + 1), name=f"n_events{h}") for h in range(H)]
        pend, pend_chunk, pend_any = Signal(P), Signal(range(max(Ch))), Signal()
        # Second pipeline stage: the item issued last clock, whose RAM words are on the read ports now.
        mac_d, last_d, out_d = Signal(), Signal(), Signal()  # input-current / readout multiply-accumulate
        lif0_d = Signal()  # LIF update of first-hidden-layer chunk c_d from its stored current
        ev_d, evb_d = Signal(), Signal()  # event: masked weight-row add; event-layer bias + LIF update
        pl_d = Signal(range(L))  # weight layer of the item
        hl_d = Signal(range(H))  # hidden layer of a LIF item
        c_d, j_d, jn_d = Signal.like(c), Signal.like(j), Signal.like(jn)
        mask_d = Signal(S)  # event: the sample lanes in which presynaptic neuron j_d spiked
        first_d = Signal()  # t == 0: the membrane and the count start from 0

        # signed sigma per layer: perturbed layers only
        sig = Signal(signed(cfg.w_bits + 1))
        m.d.comb += sig.eq(Mux(sign == 1, sigma, Mux(sign == 3, -sigma, 0)))
        ss = [Mux(~layerwise | (dir_layer == l), sig, 0) for l in range(L)]

        # ---- MAC stage: perturbed read, P multiply-accumulates, input current or readout ----------------
        def a_chunks(l):
            o = cfg.layer_shapes[l][0]
            a = getattr(fac, f"a{l}")
            return Array([Cat(*[a[cc * N + n] if cc * N + n < o else C(0, 3) for n in range(N)])
                          for cc in range(self.chunks[l])])

        def b_of(l):
            return Array([getattr(fac, f"b{l}")[k] for k in range(cfg.layer_shapes[l][1] + 1)])

        with m.Switch(pl_d):
            for l in range(L):
                with m.Case(l):
                    m.d.comb += [pert.w.eq(w_rd[l].data), pert.signed_sigma.eq(ss[l])]
                    if cached:
                        m.d.comb += [pert.a.eq(fa_rd.data), pert.b.eq(fb_rd.data)]
                    else:
                        m.d.comb += [pert.a.eq(a_chunks(l)[c_d]), pert.b.eq(b_of(l)[j_d])]

        def fetch_factors(l, chunk, col):
            """With the factor cache: the read addresses of a_l[chunk] and b_l[col], issued with the weight's."""
            if cached:
                o = cfg.layer_shapes[l][0]
                m.d.comb += [fa_rd.addr.eq(kbase + starts[l] + chunk), fb_rd.addr.eq(kbase + (starts[l] + o) + col)]

        acc_bits = 1 + max(cfg.x_bits + cfg.w_bits + math.ceil(math.log2(n0 + 1)),
                           cfg.w_bits + cbits + 1 + math.ceil(math.log2(n_last + 1)),
                           cfg.w_bits + 1 + math.ceil(math.log2(max(widths[1:-1]) + 1)))
        acc = [Signal(signed(acc_bits), name=f"acc{p}") for p in range(P)]
        cur_word = Signal(u_word)  # input-layer currents of a chunk
        ev_cur = Signal(u_word)  # event-layer currents of a chunk
        yreg = Signal(data.ArrayLayout(signed(cfg.y_bits), P))
        for p in range(P):
            s, n = divmod(p, N)
            count = Array([n_rd.data[s * N + k] for k in range(N)])[jn_d]  # last-hidden neuron j_d, sample s
            prod = pert.w_pert[n] * Mux(out_d, Cat(count, C(0, 1)).as_signed(), x_rd.data[s])
            m.d.comb += [cur_word[p].eq(saturate(rshift_round(acc[p], cfg.x_frac) + pert.w_pert[n], cfg.u_bits)),
                         ev_cur[p].eq(saturate(acc[p] + pert.w_pert[n], cfg.u_bits))]
            with m.If(mac_d):
                with m.If(last_d):
                    m.d.sync += acc[p].eq(0)
                    with m.If(out_d):
                        m.d.sync += yreg[p].eq(saturate(rshift_round(acc[p], cfg.t_shift) + pert.w_pert[n],
                                                        cfg.y_bits))
                with m.Else():
                    m.d.sync += acc[p].eq(acc[p] + prod)
            with m.If(ev_d & mask_d[s]):
                m.d.sync += acc[p].eq(acc[p] + pert.w_pert[n])
            with m.If(evb_d):
                m.d.sync += acc[p].eq(0)
        with m.If(mac_d & last_d & ~out_d):  # a chunk's input currents are complete
            m.d.comb += [i_wr.addr.eq(c_d), i_wr.data.eq(cur_word), i_wr.en.eq(1)]

        # ---- LIF stage: a chunk of hidden layer hl_d, its current from the current RAM or the events -----
        with m.Switch(hl_d):
            for h in range(H):
                with m.Case(h):
                    m.d.comb += lif.u.eq(Mux(first_d, 0, u_rd[h].data.as_value()))
        if H == 1:  # no event layers: no path from the accumulators into the LIF update to time
            m.d.comb += lif.cur.eq(i_rd.data.as_value())
        else:
            m.d.comb += lif.cur.eq(Mux(lif0_d, i_rd.data.as_value(), ev_cur.as_value()))
        fired_bits = Cat(*[lif.spike[p] & lane_valid[p // N] for p in range(P)])  # samples of the batch only
        fired = sum(fired_bits[p] for p in range(P))
        with m.If(lif0_d | evb_d):
            with m.Switch(hl_d):
                for h in range(H):
                    with m.Case(h):
                        m.d.comb += [u_wr[h].addr.eq(c_d), u_wr[h].data.eq(lif.u_next), u_wr[h].en.eq(1)]
                        m.d.sync += [spikes[h].eq(spikes[h] + fired), synops.eq(synops + fired * widths[h + 2])]
                        if h == H - 1:
                            m.d.comb += [n_wr.addr.eq(c_d), n_wr.en.eq(1)]
                            m.d.comb += [n_wr.data[p].eq(Mux(first_d, 0, n_rd.data[p]) + lif.spike[p])
                                         for p in range(P)]
                        else:
                            with m.If(fired_bits.any()):
                                m.d.comb += [ev_wr[h].addr.eq(n_events[h]), ev_wr[h].en.eq(1),
                                             ev_wr[h].data.chunk.eq(c_d), ev_wr[h].data.bits.eq(fired_bits)]
                                m.d.sync += n_events[h].eq(n_events[h] + 1)

        # ---- loss stage ---------------------------------------------------------------------------------
        ln = Signal(range(N))  # output lane within the chunk
        lo = Signal(range(nL + 1))  # output index
        ls = Signal(range(S))  # sample lane
        m.d.comb += [lossacc.pairs.payload.y.eq(Array([yreg[s * N + n] for s in range(S) for n in range(N)])[ls * N + ln]),
                     lossacc.pairs.payload.target.eq(Array([t_rd.data[s] for s in range(S)])[ls])]

        # ---- directions, steps and update ----------------------------------------------------------------
        k = Signal(range(KMAX + 1))
        kbase = Signal(range(KMAX * FPD + 1))  # k * FPD: this direction's rows in the factor cache
        pass_no = Signal(range(2 * KMAX + 2))
        plus_loss, base_loss = Signal(cfg.loss_bits), Signal(cfg.loss_bits)
        diff = Signal(signed(cfg.loss_bits + 1))
        m.d.comb += [fac.seed.eq(seed), fac.gauss4.eq(gauss4), fac.layerwise.eq(layerwise), fac.layer.eq(dir_layer)]
        with m.If(fac.drawn_valid):
            m.d.comb += [f_wr.addr.eq(kbase + fac.drawn_index), f_wr.data.eq(fac.drawn_value), f_wr.en.eq(1)]
        m.d.comb += [stepu.loss_diff.eq(diff), stepu.gain_mant.eq(gain_mant), stepu.gain_shift.eq(gain_shift),
                     stepu.clip.eq(clip)]

        um = Signal(range(max(KMAX, F) + 1))  # update: direction (and rounding bit) of the data now arriving
        umb = Signal(range((max(KMAX, F) + 1) * FPD + 1))  # um * FPD
        um_layer = Signal(range(L))  # the layer direction um perturbs (layer-wise)
        delta = Signal(signed(delta_bits(cfg)))
        rnd = Signal(F)
        n_acc = Mux(sr & (n_dirs < F), F, n_dirs)
        a_index = Array([C(starts[l], range(FPD)) for l in range(L)])[wl] + wi
        b_index = Array([C(starts[l] + o, range(FPD)) for l, (o, _) in enumerate(cfg.layer_shapes)])[wl] + wj
        m.d.comb += [upd.w[0].eq(w_at_walker), upd.delta[0].eq(delta),
                     upd.rnd[0].eq(Mux(sr, rnd, 1 << (F - 1)))]

        # ---- sequencer ----------------------------------------------------------------------------------
        op, index, value = self.cmd.payload.op, self.cmd.payload.index, self.cmd.payload.data

        def fits_signed(bits):  # value (64-bit two's complement) is in Q(bits): no wide comparator needed
            top = value[bits - 1:]
            return (top == 0) | (top == (1 << (64 - bits + 1)) - 1)
        info = Array([C(v, 64) for v in self.info])
        running = Signal()
        with m.If(running):
            m.d.sync += [cycles_busy.eq(cycles_busy + 1), cycles_last.eq(cycles_last + 1)]
        m.d.comb += self.busy.eq(running)

        def start_pass():
            m.d.sync += [g_base.eq(0), gx.eq(0), gy.eq(0), c.eq(0), j.eq(0), wa.eq(0), xa.eq(0)]
            m.d.comb += lossacc.clear.eq(1)

        def readout_start():
            m.d.sync += [c.eq(0), j.eq(0), wa.eq(0), jc.eq(0), jn.eq(0), lo.eq(0)]
            m.next = "OUT"

        def start_event_layer(h):
            m.d.comb += ev_rd[h - 1].addr.eq(0)  # the first entry's data arrives as the layer starts
            m.d.sync += [c.eq(0), e.eq(0), pend_any.eq(0), n_events[h].eq(0)]
            m.next = f"EV{h}"

        read_kind = Signal(3)  # CMD_READ: 0 param, 1 output, 2 loss, 3 step
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~rsp_pending)
                # read addresses for CMD_READ: the data arrives next clock
                for l in range(L):
                    m.d.comb += w_rd[l].addr.eq(waddr)
                m.d.comb += [y_rd.addr.eq(s_group * nL + so), l_rd.addr.eq(index), s_rd.addr.eq(index)]
                with m.If(self.cmd.valid & ~rsp_pending):
                    with m.Switch(op):
                        with m.Case(Op.NOP):
                            respond()
                        with m.Case(Op.INFO):
                            with m.If(index < len(self.info)):
                                respond(info[index])
                            with m.Else():
                                respond(status=Status.RANGE)
                        with m.Case(Op.SET):
                            registers = {Reg.BATCH: batch, Reg.SEED: seed, Reg.DIRECTIONS: n_dirs, Reg.SIGMA: sigma,
                                         Reg.GAIN_MANT: gain_mant, Reg.GAIN_SHIFT: gain_shift, Reg.CLIP: clip,
                                         Reg.MODE: mode, Reg.LAYER_START: layer_start}
                            self._set_register(m, index, value, respond, {
                                reg: (registers[reg], *limits[reg.name.lower()]) for reg in Reg})
                        with m.Case(Op.PARAM_REWIND):
                            walker_reset()
                            respond()
                        with m.Case(Op.PARAM_WRITE):
                            with m.If(wdone | ~fits_signed(cfg.w_bits)):
                                respond(status=Status.RANGE)
                            with m.Else():
                                write_walker_weight(value[:cfg.w_bits])
                                walker_advance()
                                respond()
                        with m.Case(Op.PARAM_READ):
                            with m.If(wdone):
                                respond(status=Status.RANGE)
                            with m.Else():
                                m.d.sync += read_kind.eq(0)
                                m.next = "CMD_READ"
                        with m.Case(Op.SAMPLE_SEEK):
                            with m.If((value[sb.shape().width:] == 0) & (value[:sb.shape().width] < cfg.max_batch)):
                                m.d.sync += [sb.eq(value), sf.eq(0), so.eq(0)]
                                respond()
                            with m.Else():
                                respond(status=Status.RANGE)
                        with m.Case(Op.SAMPLE_WRITE):
                            is_x = sf < n0
                            with m.If((sb >= cfg.max_batch) | ~Mux(is_x, fits_signed(cfg.x_bits), fits_signed(cfg.y_bits))):
                                respond(status=Status.RANGE)
                            with m.Else():
                                with m.If(is_x):
                                    m.d.comb += [x_wr.addr.eq(s_group * n0 + sf), x_wr.en.eq(C(1, S) << s_lane)]
                                    m.d.comb += [x_wr.data[s].eq(value[:cfg.x_bits]) for s in range(S)]
                                with m.Else():
                                    m.d.comb += [t_wr.addr.eq(s_group * nL + (sf - n0)), t_wr.en.eq(C(1, S) << s_lane)]
                                    m.d.comb += [t_wr.data[s].eq(value[:cfg.y_bits]) for s in range(S)]
                                with m.If(sf == n0 + nL - 1):
                                    m.d.sync += [sf.eq(0), sb.eq(sb + 1)]
                                with m.Else():
                                    m.d.sync += sf.eq(sf + 1)
                                respond()
                        with m.Case(Op.OUTPUT_READ):
                            with m.If(sb >= cfg.max_batch):
                                respond(status=Status.RANGE)
                            with m.Else():
                                m.d.sync += read_kind.eq(1)
                                m.next = "CMD_READ"
                        with m.Case(Op.READ_LOSS):
                            with m.If(index < 2 * KMAX + 1):
                                m.d.sync += read_kind.eq(2)
                                m.next = "CMD_READ"
                            with m.Else():
                                respond(status=Status.RANGE)
                        with m.Case(Op.READ_STEP):
                            with m.If(index < KMAX):
                                m.d.sync += read_kind.eq(3)
                                m.next = "CMD_READ"
                            with m.Else():
                                respond(status=Status.RANGE)
                        with m.Case(Op.READ_COUNTER):
                            with m.If(index < len(counters)):
                                respond(Array(counters)[index])
                            with m.Else():
                                respond(status=Status.RANGE)
                        with m.Case(Op.CLEAR_COUNTERS):
                            m.d.sync += [cnt.eq(0) for cnt in counters]
                            respond()
                        with m.Case(Op.INFER):
                            m.d.sync += [infer.eq(1), sign.eq(0), pass_no.eq(0), cycles_last.eq(0)]
                            start_pass()
                            m.next = "IN"
                        with m.Case(Op.TRAIN_STEP):
                            m.d.comb += fac.load.eq(1)  # the step's noise stream starts here
                            m.d.sync += [infer.eq(0), pass_no.eq(0), k.eq(0), kbase.eq(0), cycles_last.eq(0),
                                         dir_layer.eq(layer_start)]
                            with m.If(forward):  # one unperturbed base pass first
                                m.d.sync += sign.eq(0)
                                start_pass()
                                m.next = "IN"
                            with m.Else():
                                m.next = "DRAW"
                        with m.Default():
                            respond(status=Status.UNKNOWN)

            with m.State("CMD_READ"):
                with m.Switch(read_kind):
                    with m.Case(0):
                        respond(w_at_walker)
                        walker_advance()
                    with m.Case(1):
                        respond(Array([y_rd.data[s] for s in range(S)])[s_lane])
                        with m.If(so == nL - 1):
                            m.d.sync += [so.eq(0), sb.eq(sb + 1)]
                        with m.Else():
                            m.d.sync += so.eq(so + 1)
                    with m.Case(2):
                        respond(l_rd.data)
                    with m.Case(3):
                        respond(s_rd.data)
                m.next = "IDLE"

            # -- one forward pass over the batch, group by group ------------------------------------------
            with m.State("IN"):  # input currents of chunk c: inputs j = 0..n0-1, then the bias
                m.d.comb += [running.eq(1), w_rd[0].addr.eq(wa), x_rd.addr.eq(xa)]
                fetch_factors(0, c, j)
                m.d.sync += [mac_d.eq(1), last_d.eq(j == n0), out_d.eq(0), pl_d.eq(0), c_d.eq(c), j_d.eq(j)]
                with m.If(j == n0):
                    m.d.sync += [j.eq(0), xa.eq(gx), c.eq(c + 1), wa.eq(c + 1)]
                    with m.If(c == C0 - 1):
                        m.next = "IN_DRAIN"
                with m.Else():
                    m.d.sync += [j.eq(j + 1), xa.eq(xa + 1), wa.eq(wa + C0)]
            with m.State("IN_DRAIN"):
                m.d.comb += running.eq(1)
                m.d.sync += [mac_d.eq(0), c.eq(0), t.eq(0), n_events[0].eq(0)]
                m.next = "TICK"
            with m.State("TICK"):  # first hidden layer, time step t, chunk c
                m.d.comb += [running.eq(1), u_rd[0].addr.eq(c), i_rd.addr.eq(c)]
                if H == 1:
                    m.d.comb += n_rd.addr.eq(c)
                m.d.sync += [lif0_d.eq(1), hl_d.eq(0), c_d.eq(c), first_d.eq(t == 0)]
                with m.If(c == C0 - 1):
                    m.d.sync += c.eq(0)
                    if H == 1:  # one hidden layer: its time steps follow each other without a gap
                        m.d.sync += t.eq(t + 1)
                        with m.If(t == cfg.t_steps - 1):
                            m.next = "TICK_DRAIN"
                    else:
                        m.next = "TICK_DRAIN"
                with m.Else():
                    m.d.sync += c.eq(c + 1)
            with m.State("TICK_DRAIN"):
                m.d.comb += running.eq(1)
                m.d.sync += lif0_d.eq(0)
                if H == 1:
                    readout_start()
                else:
                    start_event_layer(1)
            for h in range(1, H):
                # Hidden layer h, chunk c: replay the events of layer h-1 (one presynaptic neuron per clock:
                # its weight word is added in the sample lanes where it spiked), then the bias word and the
                # LIF update. Each list entry is a chunk with spikes; its neurons are sent lowest first.
                evr, n_prev = ev_rd[h - 1], widths[h]
                with m.State(f"EV{h}"):
                    m.d.comb += running.eq(1)
                    src_bits = Mux(pend_any, pend, evr.data.bits)
                    src_chunk = Mux(pend_any, pend_chunk, evr.data.chunk)
                    have = pend_any | (e < n_events[h - 1])
                    nsel = Signal(range(N), name=f"ev{h}_neuron")
                    for n in reversed(range(N)):
                        with m.If(Cat(*[src_bits[s * N + n] for s in range(S)]).any()):
                            m.d.comb += nsel.eq(n)
                    mask = Cat(*[Array([src_bits[s * N + k] for k in range(N)])[nsel] for s in range(S)])
                    rest = Cat(*[src_bits[p] & (nsel != p % N) for p in range(P)])
                    j_ev = src_chunk * N + nsel
                    m.d.comb += evr.addr.eq(e)
                    with m.If(have):
                        m.d.comb += w_rd[h].addr.eq(j_ev * Ch[h] + c)
                        fetch_factors(h, c, j_ev)
                        m.d.sync += [ev_d.eq(1), evb_d.eq(0), pl_d.eq(h), c_d.eq(c), j_d.eq(j_ev), mask_d.eq(mask),
                                     pend.eq(rest), pend_chunk.eq(src_chunk), pend_any.eq(rest.any())]
                        with m.If(~pend_any):  # the fetched entry was taken: fetch the next
                            m.d.sync += e.eq(e + 1)
                            m.d.comb += evr.addr.eq(e + 1)
                    with m.Else():
                        m.d.comb += [w_rd[h].addr.eq(n_prev * Ch[h] + c), u_rd[h].addr.eq(c), evr.addr.eq(0)]
                        fetch_factors(h, c, n_prev)
                        if h == H - 1:
                            m.d.comb += n_rd.addr.eq(c)
                        m.d.sync += [ev_d.eq(0), evb_d.eq(1), pl_d.eq(h), hl_d.eq(h), c_d.eq(c), j_d.eq(n_prev),
                                     first_d.eq(t == 0), e.eq(0)]
                        with m.If(c == Ch[h] - 1):
                            m.next = f"EV{h}_DRAIN"
                        with m.Else():
                            m.d.sync += c.eq(c + 1)
                with m.State(f"EV{h}_DRAIN"):
                    m.d.comb += running.eq(1)
                    m.d.sync += [ev_d.eq(0), evb_d.eq(0)]
                    if h < H - 1:
                        start_event_layer(h + 1)
                    else:
                        m.d.sync += t.eq(t + 1)
                        with m.If(t == cfg.t_steps - 1):
                            readout_start()
                        with m.Else():
                            m.d.sync += [c.eq(0), n_events[0].eq(0)]
                            m.next = "TICK"
            with m.State("OUT"):  # readout of output chunk c from the spike counts of the last hidden layer
                m.d.comb += [running.eq(1), w_rd[H].addr.eq(wa), n_rd.addr.eq(jc)]
                fetch_factors(H, c, j)
                m.d.sync += [mac_d.eq(1), last_d.eq(j == n_last), out_d.eq(1), pl_d.eq(H), c_d.eq(c), j_d.eq(j),
                             jn_d.eq(jn)]
                with m.If(j == n_last):
                    m.next = "OUT_DRAIN"
                with m.Else():
                    m.d.sync += [j.eq(j + 1), wa.eq(wa + CR)]
                    with m.If(jn == N - 1):
                        m.d.sync += [jn.eq(0), jc.eq(jc + 1)]
                    with m.Else():
                        m.d.sync += jn.eq(jn + 1)
            with m.State("OUT_DRAIN"):
                m.d.comb += running.eq(1)
                m.d.sync += [mac_d.eq(0), ln.eq(0)]
                m.next = "LOSS_ISSUE"
            with m.State("LOSS_ISSUE"):  # output lo = c * N + ln: store y, fetch the targets
                m.d.comb += [running.eq(1), t_rd.addr.eq(gy + lo), y_wr.addr.eq(gy + lo)]
                with m.If(infer):  # OUTPUT_READ returns the last INFER's outputs, for the samples of its batch
                    m.d.comb += y_wr.en.eq(Cat(*lane_valid))
                m.d.comb += [y_wr.data[s].eq(Array([yreg[s * N + n] for n in range(N)])[ln]) for s in range(S)]
                m.d.sync += ls.eq(0)
                m.next = "LOSS_PAIRS"
            with m.State("LOSS_PAIRS"):
                m.d.comb += [running.eq(1), t_rd.addr.eq(gy + lo), lossacc.pairs.valid.eq(Array(lane_valid)[ls])]
                m.d.sync += ls.eq(ls + 1)
                with m.If(ls == S - 1):
                    m.d.sync += [ln.eq(ln + 1), lo.eq(lo + 1)]
                    with m.If((ln == N - 1) | (lo == nL - 1)):  # chunk done
                        with m.If(c == CR - 1):
                            m.next = "GROUP_END"
                        with m.Else():
                            m.d.sync += [c.eq(c + 1), j.eq(0), wa.eq(c + 1), jc.eq(0), jn.eq(0)]
                            m.next = "OUT"
                    with m.Else():
                        m.next = "LOSS_ISSUE"
            with m.State("GROUP_END"):
                m.d.comb += running.eq(1)
                m.d.sync += [g_base.eq(g_base + S), gx.eq(gx + n0), gy.eq(gy + nL),
                             c.eq(0), j.eq(0), wa.eq(0), xa.eq(gx + n0)]
                with m.If(g_base + S < batch):
                    m.next = "IN"
                with m.Else():
                    m.next = "PASS_END"
            with m.State("PASS_END"):
                m.d.comb += [running.eq(1), l_wr.addr.eq(pass_no), l_wr.data.eq(lossacc.loss), l_wr.en.eq(1)]
                m.d.sync += pass_no.eq(pass_no + 1)
                with m.If(infer):
                    respond(lossacc.loss)
                    m.next = "IDLE"
                with m.Elif(sign == 0):  # forward differences: the base loss
                    m.d.sync += base_loss.eq(lossacc.loss)
                    m.next = "DRAW"
                with m.Elif(sign == 1):
                    m.d.sync += plus_loss.eq(lossacc.loss)
                    with m.If(forward):
                        m.d.sync += diff.eq(lossacc.loss - base_loss)
                        m.next = "STEP_K"
                    with m.Else():
                        m.d.sync += sign.eq(3)
                        start_pass()
                        m.next = "IN"
                with m.Else():
                    m.d.sync += diff.eq(plus_loss - lossacc.loss)
                    m.next = "STEP_K"

            # -- directions and steps -----------------------------------------------------------------------
            with m.State("DRAW"):
                m.d.comb += [running.eq(1), fac.start.eq(1)]
                m.next = "DRAW_WAIT"
            with m.State("DRAW_WAIT"):
                m.d.comb += running.eq(1)
                with m.If(~fac.busy):
                    m.d.sync += sign.eq(1)
                    start_pass()
                    m.next = "IN"
            with m.State("STEP_K"):
                m.d.comb += [running.eq(1), stepu.start.eq(1)]
                m.next = "STEP_WAIT"
            with m.State("STEP_WAIT"):
                m.d.comb += running.eq(1)
                with m.If(~stepu.busy):
                    m.next = "STEP_STORE"
            with m.State("STEP_STORE"):
                m.d.comb += [running.eq(1), s_wr.addr.eq(k), s_wr.data.eq(stepu.step), s_wr.en.eq(1)]
                m.d.sync += [k.eq(k + 1), kbase.eq(kbase + FPD),
                             dir_layer.eq(Mux(dir_layer == L - 1, 0, dir_layer + 1))]
                with m.If(k == n_dirs - 1):
                    walker_reset()
                    m.next = "UPD_ISSUE"
                with m.Else():
                    m.next = "DRAW"

            # -- the update pass: one weight at a time, canonical order ----------------------------------
            with m.State("UPD_ISSUE"):
                m.d.comb += running.eq(1)
                m.d.comb += [w_rd[l].addr.eq(waddr) for l in range(L)]
                m.d.comb += [fa_rd.addr.eq(a_index), fb_rd.addr.eq(b_index), s_rd.addr.eq(0)]
                m.d.sync += [um.eq(0), umb.eq(0), um_layer.eq(layer_start), delta.eq(0), rnd.eq(0)]
                m.next = "UPD_ACC"
            with m.State("UPD_ACC"):  # direction um's factors and step arrive; the next ones are fetched
                m.d.comb += running.eq(1)
                m.d.comb += [w_rd[l].addr.eq(waddr) for l in range(L)]
                m.d.comb += [fa_rd.addr.eq(umb + FPD + a_index), fb_rd.addr.eq(umb + FPD + b_index),
                             s_rd.addr.eq(um + 1)]
                with m.If((um < n_dirs) & (~layerwise | (um_layer == wl))):
                    m.d.sync += delta.eq(delta + s_rd.data * (fa_rd.data * fb_rd.data))
                with m.If(sr & (um < F)):  # stochastic rounding: step_frac stream bits, LSB first
                    m.d.comb += fac.rest.ready.eq(1)
                    m.d.sync += rnd.eq(Cat(rnd[1:], fac.rest.payload))
                m.d.sync += [um.eq(um + 1), umb.eq(umb + FPD), um_layer.eq(Mux(um_layer == L - 1, 0, um_layer + 1))]
                with m.If(um == n_acc - 1):
                    m.next = "UPD_WRITE"
            with m.State("UPD_WRITE"):
                m.d.comb += running.eq(1)
                m.d.comb += [w_rd[l].addr.eq(waddr) for l in range(L)]
                write_walker_weight(upd.w_new[0])
                walker_advance()
                with m.If((wl == L - 1) & (wi == n_out[wl] - 1) & (wj == n_in[wl])):
                    respond(pass_no)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "UPD_ISSUE"
        return m

    @staticmethod
    def _set_register(m, index, value, respond, table):
        with m.Switch(index):
            for reg, (sig, lo, hi) in table.items():
                with m.Case(reg):
                    bits = max(hi.bit_length(), 1)  # compare only the bits a legal value can use
                    with m.If((value[bits:] == 0) & (value[:bits] >= lo) & (value[:bits] <= hi)):
                        m.d.sync += sig.eq(value)
                        respond()
                    with m.Else():
                        respond(status=Status.RANGE)
            with m.Default():
                respond(status=Status.RANGE)
