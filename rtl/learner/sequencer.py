"""The step sequencer: INFER and TRAIN_STEP as sequences of forward passes, steps and the update pass.

INFER is one unperturbed pass; its loss is the result. A training step: for each direction k, draw its
factors from the LFSR (DirectionFactors), also into the factor cache (K x 133 values for 2-64-1; the
contract's "optional factor cache"), run the + and - (or + only, after one unperturbed base pass)
passes, and turn the loss difference into the scalar step (StepUnit). Then the update pass walks the
weights in canonical order: per weight, delta = sum_k step_k a_k[i] b_k[j] (one direction per clock
from the cache), r = the next step_frac stream bits (the LFSR simply continues past the directions, as
the contract orders), and w <- sat_w(w - ((delta + r) >> step_frac)) (UpdateLanes). The result is the
number of losses stored (READ_LOSS).

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
from .update import StepUnit, UpdateLanes, delta_bits
from .walker import WalkerAccess


class StepSequencer(wiring.Component):
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int, memory_map: MemoryMap):
        self.cfg = cfg
        # One neuron lane: the passes read this direction's factors from the factor cache, not registers.
        self.cached = neuron_lanes == 1
        KMAX = cfg.max_directions
        super().__init__({
            "infer": In(1), "train": In(1),  # start (one clock)
            "busy": Out(1),
            "done": Out(1),  # the last clock of the command: `result` is its result
            "result": Out(64),
            # the registers the host sets
            "seed": In(32), "directions": In(range(KMAX + 1)), "mode": In(MODE), "layer_start": In(range(cfg.n_layers)),
            "gain_mant": In(cfg.gain_bits), "gain_shift": In(6), "clip": In(cfg.step_bits - 1),
            "run": Out(PassControl(cfg)),
            "params": Out(WalkerAccess(cfg, neuron_lanes)),
            **({} if self.cached else {"factors": Out(FactorRegisters(cfg))}),
            **memory_map.ports("factors_wr", "factors_a_rd", "factors_b_rd", "loss_wr", "step_wr", "step_rd"),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, run = self.cfg, self.run
        m.submodules.factors = fac = DirectionFactors(cfg, registers=not self.cached)
        m.submodules.stepu = stepu = StepUnit(cfg)
        m.submodules.upd = upd = UpdateLanes(cfg, 1)
        pass_no = Signal(range(2 * cfg.max_directions + 2))  # the next loss's address in the loss RAM
        k = Signal(range(cfg.max_directions + 1))  # direction
        diff = Signal(signed(cfg.loss_bits + 1))  # direction k's loss difference, into StepUnit

        m.d.comb += [fac.seed.eq(self.seed), fac.gauss4.eq(self.mode.gauss4), fac.layerwise.eq(self.mode.layerwise),
                     fac.layer.eq(run.layer)]
        if not self.cached:
            m.d.comb += [getattr(self.factors, name).eq(getattr(fac, name)) for name in self.factors.signature.members]
        with m.If(fac.drawn_valid):  # the factor cache: direction k's rows from kbase = k * FPD
            m.d.comb += [self.factors_wr.addr.eq(run.kbase + fac.drawn_index), self.factors_wr.data.eq(fac.drawn_value),
                         self.factors_wr.en.eq(1)]
        m.d.comb += [stepu.loss_diff.eq(diff), stepu.gain_mant.eq(self.gain_mant), stepu.gain_shift.eq(self.gain_shift),
                     stepu.clip.eq(self.clip)]
        with m.FSM() as fsm:
            self._commands_and_passes(m, fac, pass_no, k, diff)
            self._directions(m, fac, stepu, k)
            self._update_pass(m, fac, upd, pass_no)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

    def _start_pass(self, m, sign):
        m.d.sync += self.run.sign.eq(sign)
        m.d.comb += self.run.start.eq(1)
        m.next = "PASS"

    def _commands_and_passes(self, m, fac, pass_no, k, diff):
        """INFER or TRAIN_STEP starts; each pass's loss goes to the loss RAM and decides what follows."""
        run, mode = self.run, self.mode
        plus_loss, base_loss = Signal(self.cfg.loss_bits), Signal(self.cfg.loss_bits)
        with m.State("IDLE"):
            with m.If(self.infer):
                m.d.sync += [run.store_outputs.eq(1), pass_no.eq(0)]
                self._start_pass(m, 0)
            with m.If(self.train):
                m.d.comb += fac.load.eq(1)  # the step's noise stream starts here
                m.d.sync += [run.store_outputs.eq(0), pass_no.eq(0), k.eq(0), run.kbase.eq(0),
                             run.layer.eq(self.layer_start)]
                with m.If(mode.forward):  # one unperturbed base pass first
                    self._start_pass(m, 0)
                with m.Else():
                    m.next = "DRAW"
        with m.State("PASS"):
            with m.If(run.done):
                m.d.comb += [self.loss_wr.addr.eq(pass_no), self.loss_wr.data.eq(run.loss), self.loss_wr.en.eq(1)]
                m.d.sync += pass_no.eq(pass_no + 1)
                with m.If(run.store_outputs):  # INFER
                    m.d.comb += [self.done.eq(1), self.result.eq(run.loss)]
                    m.next = "IDLE"
                with m.Elif(run.sign == 0):  # forward differences: the base loss
                    m.d.sync += base_loss.eq(run.loss)
                    m.next = "DRAW"
                with m.Elif(run.sign == 1):
                    m.d.sync += plus_loss.eq(run.loss)
                    with m.If(mode.forward):
                        m.d.sync += diff.eq(run.loss - base_loss)
                        m.next = "STEP_K"
                    with m.Else():
                        self._start_pass(m, 3)
                with m.Else():
                    m.d.sync += diff.eq(plus_loss - run.loss)
                    m.next = "STEP_K"

    def _directions(self, m, fac, stepu, k):
        """Direction k: its factors drawn (then its passes, from DRAW_WAIT), its step stored; after the last
        direction, the update pass."""
        run, L = self.run, self.cfg.n_layers
        with m.State("DRAW"):
            m.d.comb += fac.start.eq(1)
            m.next = "DRAW_WAIT"
        with m.State("DRAW_WAIT"):
            with m.If(~fac.busy):
                self._start_pass(m, 1)
        with m.State("STEP_K"):
            m.d.comb += stepu.start.eq(1)
            m.next = "STEP_WAIT"
        with m.State("STEP_WAIT"):
            with m.If(~stepu.busy):
                m.next = "STEP_STORE"
        with m.State("STEP_STORE"):
            m.d.comb += [self.step_wr.addr.eq(k), self.step_wr.data.eq(stepu.step), self.step_wr.en.eq(1)]
            m.d.sync += [k.eq(k + 1), run.kbase.eq(run.kbase + DirectionFactors.factors_per_direction(self.cfg)),
                         run.layer.eq(Mux(run.layer == L - 1, 0, run.layer + 1))]
            with m.If(k == self.directions - 1):
                m.d.comb += self.params.rewind.eq(1)
                m.next = "UPD_ISSUE"
            with m.Else():
                m.next = "DRAW"

    def _update_pass(self, m, fac, upd, pass_no):
        """One weight at a time, canonical order: delta over the directions, rounding bits, write-back. The
        weight is the walker's, which has the weight RAMs while the forward engine is idle."""
        cfg, L, F, FPD = self.cfg, self.cfg.n_layers, self.cfg.step_frac, DirectionFactors.factors_per_direction(self.cfg)
        KMAX, w, sr = cfg.max_directions, self.params, self.mode.stochastic_rounding
        starts = DirectionFactors.slot_starts(cfg)
        um = Signal(range(max(KMAX, F) + 1))  # direction (and rounding bit) of the data now arriving
        umb = Signal(range((max(KMAX, F) + 1) * FPD + 1))  # um * FPD
        um_layer = Signal(range(L))  # the layer direction um perturbs (layer-wise)
        delta = Signal(signed(delta_bits(cfg)))
        rnd = Signal(F)
        n_acc = Mux(sr & (self.directions < F), F, self.directions)  # clocks: directions, or rounding bits
        # the weight's factors in the cache: a_l[row] and b_l[col] of direction um
        a_index = Array([C(starts[l], range(FPD)) for l in range(L)])[w.layer] + w.row
        b_index = Array([C(starts[l] + o, range(FPD)) for l, (o, _) in enumerate(cfg.layer_shapes)])[w.layer] + w.col
        m.d.comb += [upd.w[0].eq(w.weight), upd.delta[0].eq(delta), upd.rnd[0].eq(Mux(sr, rnd, 1 << (F - 1)))]
        with m.State("UPD_ISSUE"):
            m.d.comb += [self.factors_a_rd.addr.eq(a_index), self.factors_b_rd.addr.eq(b_index), self.step_rd.addr.eq(0)]
            m.d.sync += [um.eq(0), umb.eq(0), um_layer.eq(self.layer_start), delta.eq(0), rnd.eq(0)]
            m.next = "UPD_ACC"
        with m.State("UPD_ACC"):  # direction um's factors and step arrive; the next ones are fetched
            m.d.comb += [self.factors_a_rd.addr.eq(umb + FPD + a_index), self.factors_b_rd.addr.eq(umb + FPD + b_index),
                         self.step_rd.addr.eq(um + 1)]
            with m.If((um < self.directions) & (~self.mode.layerwise | (um_layer == w.layer))):
                m.d.sync += delta.eq(delta + self.step_rd.data * (self.factors_a_rd.data * self.factors_b_rd.data))
            with m.If(sr & (um < F)):  # stochastic rounding: step_frac stream bits, LSB first
                m.d.comb += fac.rest.ready.eq(1)
                m.d.sync += rnd.eq(Cat(rnd[1:], fac.rest.payload))
            m.d.sync += [um.eq(um + 1), umb.eq(umb + FPD), um_layer.eq(Mux(um_layer == L - 1, 0, um_layer + 1))]
            with m.If(um == n_acc - 1):
                m.next = "UPD_WRITE"
        with m.State("UPD_WRITE"):
            m.d.comb += [w.write.eq(1), w.data.eq(upd.w_new[0]), w.advance.eq(1)]
            with m.If(w.last):
                m.d.comb += [self.done.eq(1), self.result.eq(pass_no)]
                m.next = "IDLE"
            with m.Else():
                m.next = "UPD_ISSUE"
