"""The step sequencer: INFER and TRAIN_STEP as sequences of forward passes, steps and the update pass.

INFER is one unperturbed pass; its loss is the result. A training step: the directions' factors are
drawn from the LFSR (DirectionFactors) in order, ahead of the passes (_draws), into lane k of the factor
cache (one word per flat factor index, holding that factor of every direction: the contract's "optional
factor cache") and, with one neuron lane, into direction k's half of the pass buffer the forward engine
reads. For each direction k: the + and - (or + only, after one unperturbed base pass) passes, and the
scalar step from the loss difference (StepUnit), kept in a register (and in the step RAM, for
READ_STEP). Then the update pass walks the weights in canonical order, one weight per clock, pipelined:
  issue   the walker's pointer is the weight's RAM address; the cache words of its a_l[row] and b_l[col]
          are read in the same clock (the two read ports);
  hold    the words (and the weight) arrive and are registered;
  sum     UpdateDelta: delta = sum_k step_k a_k b_k over the directions that count for the weight's
          layer (k < K; layer-wise scope: (layer_start + k) mod L == l), all of them at once from the
          words, in UpdateDelta.latency clocks (1, or 2 for a deep adder tree);
  write   w <- sat_w(w - ((delta + r) >> step_frac)) (UpdateLanes), stored by the walker at the
          weight's position (its update port writes update_write_delay(cfg) clocks behind the pointer),
          with r the weight's step_frac rounding bits: the stream right after the last direction,
          one group per weight in canonical order (DirectionFactors offers a group per clock).
The next weights are issued while one is summed and written, so the pass takes n_params + D clocks,
D = update_write_delay(cfg) (3, or 4 with more than 8 directions), whatever K and step_frac; one
direction per clock, it took n_params x (max(K, step_frac) + 2). The result is the number of losses
stored (READ_LOSS); `base_loss` is the step's base loss, which TRAIN_STEPS sums.

Every pass's loss goes to the loss RAM, every step to the step RAM.
"""
from __future__ import annotations

from amaranth import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig

from .factors import DirectionFactors
from .forward import FactorRegisters, PassControl
from .frontend import MODE
from .memories import MemoryMap
from .update import StepUnit, UpdateDelta, UpdateLanes
from .walker import WalkerAccess


class StepSequencer(wiring.Component):
    @staticmethod
    def update_write_delay(cfg: DeviceConfig) -> int:
        """Clocks from a weight's read to its write-back in the update pass (the walker's write delay)."""
        return 2 + UpdateDelta.plan(cfg)[2]

    def __init__(self, cfg: DeviceConfig, neuron_lanes: int, memory_map: MemoryMap):
        self.cfg = cfg
        # One neuron lane: the passes read their direction's factors from the pass buffer, not registers.
        self.cached = neuron_lanes == 1
        KMAX = cfg.max_directions
        super().__init__({
            "infer": In(1), "train": In(1),  # start (one clock)
            "busy": Out(1),
            "done": Out(1),  # the last clock of the command: `result` is its result
            "result": Out(64),
            # TRAIN_STEP's base loss, from its first passes: losses[0] (forward differences) or
            # (losses[0] + losses[1]) >> 1 (central); what TRAIN_STEPS sums
            "base_loss": Out(cfg.loss_bits),
            # the registers the host sets
            "seed": In(32), "directions": In(range(KMAX + 1)), "mode": In(MODE), "layer_start": In(range(cfg.n_layers)),
            "gain_mant": In(cfg.gain_bits), "gain_shift": In(6), "clip": In(cfg.step_bits - 1),
            "run": Out(PassControl(cfg)),
            "params": Out(WalkerAccess(cfg, neuron_lanes)),
            **({} if self.cached else {"factors": Out(FactorRegisters(cfg))}),
            **memory_map.ports("factors_wr", "factors_a_rd", "factors_b_rd", "loss_wr", "step_wr",
                               *(["pass_factors_wr"] if self.cached else [])),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, run = self.cfg, self.run
        m.submodules.factors = fac = DirectionFactors(cfg, registers=not self.cached)
        m.submodules.stepu = stepu = StepUnit(cfg)
        m.submodules.delta = delta = UpdateDelta(cfg)
        m.submodules.upd = upd = UpdateLanes(cfg, 1)
        pass_no = Signal(range(2 * cfg.max_directions + 2))  # the next loss's address in the loss RAM
        k = run.k  # direction (held during its passes: the forward engine reads its half of the pass buffer)
        diff = Signal(signed(cfg.loss_bits + 1))  # direction k's loss difference, into StepUnit
        steps = Array([Signal(signed(cfg.step_bits), name=f"step{d}") for d in range(cfg.max_directions)])
        issue = Signal()  # the update pass issues the weight at the walker's pointer
        last_write = Signal()  # the update pass writes its last weight back

        dk, stepping = self._draws(m, fac, k)  # the direction being drawn (or the next to draw)
        m.d.comb += [fac.seed.eq(self.seed), fac.gauss4.eq(self.mode.gauss4), fac.layerwise.eq(self.mode.layerwise)]
        if not self.cached:
            m.d.comb += [getattr(self.factors, name).eq(getattr(fac, name)) for name in self.factors.signature.members]
        with m.If(fac.drawn_valid):  # the factor cache: the drawn index's word, direction dk's lane
            m.d.comb += [self.factors_wr.addr.eq(fac.drawn_index), self.factors_wr.en.eq(C(1, cfg.max_directions) << dk)]
            m.d.comb += [self.factors_wr.data[d].eq(fac.drawn_value) for d in range(cfg.max_directions)]
            if self.cached:  # and the pass buffer's half for direction dk
                m.d.comb += [self.pass_factors_wr.addr.eq(DirectionFactors.pass_buffer_half(cfg, dk) + fac.drawn_index),
                             self.pass_factors_wr.data.eq(fac.drawn_value), self.pass_factors_wr.en.eq(1)]
        m.d.comb += [stepu.loss_diff.eq(diff), stepu.gain_mant.eq(self.gain_mant), stepu.gain_shift.eq(self.gain_shift),
                     stepu.clip.eq(self.clip)]
        with m.FSM() as fsm:
            self._commands_and_passes(m, fac, pass_no, k, diff, stepping)
            self._directions(m, fac, stepu, k, steps, dk, stepping)
            self._update_pass(m, pass_no, issue, last_write)
        self._update_pipeline(m, fac, delta, upd, steps, issue, last_write)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

    def _draws(self, m, fac, k):
        """The directions' factors are drawn in order, as soon as the step starts and ahead of the passes:
        with one neuron lane direction k + 1's while direction k's passes run (the pass buffer has a half
        for each), with the factor registers only once direction k's passes are done. The noise stream is
        the contract's either way: the draws follow each other, and the rounding bits come after the last."""
        cfg, L = self.cfg, self.cfg.n_layers
        stepping = Signal()  # a TRAIN_STEP is under way (set and cleared by the FSM)
        dk = Signal(range(cfg.max_directions + 1))  # directions drawn so far = the one being drawn
        layer = Signal(range(L))  # the layer direction dk perturbs (layer-wise scope)
        drawing, was_busy = Signal(), Signal()
        ahead = 1 if self.cached else 0
        m.d.comb += fac.layer.eq(layer)
        m.d.sync += was_busy.eq(fac.busy)
        with m.If(self.train):
            m.d.sync += [dk.eq(0), layer.eq(self.layer_start), drawing.eq(0)]
        with m.Elif(stepping & ~drawing & (dk < self.directions) & (dk <= k + ahead)):
            m.d.comb += fac.start.eq(1)
            m.d.sync += drawing.eq(1)
        with m.Elif(drawing & was_busy & ~fac.busy):  # the draw ended last clock
            m.d.sync += [drawing.eq(0), dk.eq(dk + 1), layer.eq(Mux(layer == L - 1, 0, layer + 1))]
        return dk, stepping

    def _start_pass(self, m, sign):
        m.d.sync += self.run.sign.eq(sign)
        m.d.comb += self.run.start.eq(1)
        m.next = "PASS"

    def _commands_and_passes(self, m, fac, pass_no, k, diff, stepping):
        """INFER or TRAIN_STEP starts; each pass's loss goes to the loss RAM and decides what follows."""
        run, mode, base_loss = self.run, self.mode, self.base_loss
        plus_loss = Signal(self.cfg.loss_bits)
        with m.State("IDLE"):
            with m.If(self.infer):
                m.d.sync += [run.store_outputs.eq(1), pass_no.eq(0)]
                self._start_pass(m, 0)
            with m.If(self.train):
                m.d.comb += fac.load.eq(1)  # the step's noise stream starts here
                m.d.sync += [run.store_outputs.eq(0), pass_no.eq(0), k.eq(0), run.layer.eq(self.layer_start),
                             stepping.eq(1)]
                with m.If(mode.forward):  # one unperturbed base pass first (while direction 0 is drawn)
                    self._start_pass(m, 0)
                with m.Else():
                    m.next = "DRAWN"
        with m.State("PASS"):
            with m.If(run.done):
                m.d.comb += [self.loss_wr.addr.eq(pass_no), self.loss_wr.data.eq(run.loss), self.loss_wr.en.eq(1)]
                m.d.sync += pass_no.eq(pass_no + 1)
                with m.If(run.store_outputs):  # INFER
                    m.d.comb += [self.done.eq(1), self.result.eq(run.loss)]
                    m.next = "IDLE"
                with m.Elif(run.sign == 0):  # forward differences: the base loss
                    m.d.sync += base_loss.eq(run.loss)
                    m.next = "DRAWN"
                with m.Elif(run.sign == 1):
                    m.d.sync += plus_loss.eq(run.loss)
                    with m.If(mode.forward):
                        m.d.sync += diff.eq(run.loss - base_loss)
                        m.next = "STEP_K"
                    with m.Else():
                        self._start_pass(m, 3)
                with m.Else():
                    m.d.sync += diff.eq(plus_loss - run.loss)
                    with m.If(k == 0):  # central differences: the base loss is direction 0's mean
                        m.d.sync += base_loss.eq((plus_loss + run.loss) >> 1)
                    m.next = "STEP_K"

    def _directions(self, m, fac, stepu, k, steps, dk, stepping):
        """Direction k: its passes once its factors are drawn (DRAWN), its step stored; after the last
        direction, the update pass."""
        run, L = self.run, self.cfg.n_layers
        with m.State("DRAWN"):
            with m.If(dk > k):
                self._start_pass(m, 1)
        with m.State("STEP_K"):
            m.d.comb += stepu.start.eq(1)
            m.next = "STEP_WAIT"
        with m.State("STEP_WAIT"):
            with m.If(~stepu.busy):
                m.next = "STEP_STORE"
        with m.State("STEP_STORE"):  # the step RAM (READ_STEP) and direction k's step register
            m.d.comb += [self.step_wr.addr.eq(k), self.step_wr.data.eq(stepu.step), self.step_wr.en.eq(1)]
            m.d.sync += [steps[k].eq(stepu.step), run.layer.eq(Mux(run.layer == L - 1, 0, run.layer + 1))]
            with m.If(k == self.directions - 1):
                m.d.comb += self.params.rewind.eq(1)
                m.d.sync += stepping.eq(0)
                m.next = "UPD"
            with m.Else():
                m.d.sync += k.eq(k + 1)
                m.next = "DRAWN"

    def _update_pass(self, m, pass_no, issue, last_write):
        """The states: issue one weight per clock (UPD), then wait for the last write-back (UPD_DRAIN)."""
        with m.State("UPD"):
            m.d.comb += [issue.eq(1), self.params.advance.eq(1)]
            with m.If(self.params.last):
                m.next = "UPD_DRAIN"
        with m.State("UPD_DRAIN"):
            with m.If(last_write):
                m.d.comb += [self.done.eq(1), self.result.eq(pass_no)]
                m.next = "IDLE"

    def _update_pipeline(self, m, fac, delta, upd, steps, issue, last_write):
        """The update pass's datapath, one weight per stage: issue (the walker's pointer, the cache
        addresses), the cache words and the weight arrive and are registered, sum (UpdateDelta), write-back. The weight is the
        walker's, which has the weight RAMs while the forward engine is idle; the factor cache's read
        ports are the sequencer's then too (with one neuron lane they are the forward engine's in a pass)."""
        cfg, L, F, w = self.cfg, self.cfg.n_layers, self.cfg.step_frac, self.params
        KMAX, mode = cfg.max_directions, self.mode
        starts = DirectionFactors.slot_starts(cfg)
        FPD = DirectionFactors.factors_per_direction(cfg)
        with m.If(issue):  # the weight's factors: a_l[row] and b_l[col], every direction's in one word
            a_index = Array([C(starts[l], range(FPD)) for l in range(L)])[w.layer] + w.row
            b_index = Array([C(starts[l] + o, range(FPD)) for l, (o, _) in enumerate(cfg.layer_shapes)])[w.layer] + w.col
            m.d.comb += [self.factors_a_rd.addr.eq(a_index), self.factors_b_rd.addr.eq(b_index)]

        # stage 1: the words of the weight issued last clock are on the read ports
        valid1, layer1 = Signal(), Signal(range(L))
        m.d.sync += [valid1.eq(issue), layer1.eq(w.layer)]
        counts = Signal(KMAX)  # direction d counts for the weight's layer
        for d in range(KMAX):  # layer-wise: direction d perturbs layer (layer_start + d) mod L
            perturbs = Cat(*[(self.layer_start == s) & (layer1 == (s + d) % L) for s in range(L)]).any()
            m.d.comb += counts[d].eq((d < self.directions) & (~mode.layerwise | perturbs))
        # stage 2: the words registered, so that the block RAMs' clock-to-output is not in the sum's clock
        a2, b2 = Signal.like(self.factors_a_rd.data), Signal.like(self.factors_b_rd.data)
        counts2, valid2, weight2 = Signal(KMAX), Signal(), Signal.like(w.weight)
        m.d.sync += [a2.eq(self.factors_a_rd.data), b2.eq(self.factors_b_rd.data), counts2.eq(counts),
                     valid2.eq(valid1), weight2.eq(w.weight)]
        m.d.comb += [delta.a.eq(a2), delta.b.eq(b2), delta.counts.eq(counts2)]
        m.d.comb += [delta.steps[d].eq(steps[d]) for d in range(KMAX)]

        # the sum's latency: the weight and the valid bit travel beside it
        valid, weight = valid2, weight2
        valids = [valid1, valid2]
        for stage in range(delta.latency):
            v, wq = Signal(name=f"upd_valid{stage + 2}"), Signal.like(weight, name=f"upd_weight{stage + 2}")
            m.d.sync += [v.eq(valid), wq.eq(weight)]
            valid, weight = v, wq
            valids.append(v)
        # write-back stage: this clock's rounding group is the weight's (one group per weight, in order)
        sr = mode.stochastic_rounding
        m.d.comb += [upd.w[0].eq(weight), upd.delta[0].eq(delta.delta),
                     upd.rnd[0].eq(Mux(sr, fac.rest.payload, 1 << (F - 1)))]
        with m.If(valid):
            m.d.comb += [w.write.eq(1), w.data.eq(upd.w_new[0]), fac.rest.ready.eq(sr)]
        m.d.comb += last_write.eq(valid & ~Cat(*valids[:-1]).any())
