"""The learner's command interface, executed by the golden model: the device in software.

`GoldenDevice.execute(op, index, data) -> (status, data)` answers every command the way the gateware
(rtl/learner/core.py) does, with the golden model doing the arithmetic, so the same host code (and the same
command sequence) runs against either. Its behaviour is checked against the RTL response for response
(tests/test_command_conformance.py). Only the clock counters differ: the software device has no clock
and reports 0 for them.
"""
from __future__ import annotations

import numpy as np

from .contract import streams
from .contract.commands import Mode, Op, Reg, Status, info_words
from .contract.config import MAX_RUN_STEPS, DeviceConfig, StepParams, register_limits
from .contract.fixed import MASK64, fits_signed, signed64
from .golden import GoldenModel, base_loss


class GoldenDevice:
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int = 1, sample_lanes: int = 1):
        self.cfg = cfg
        self.model = GoldenModel(cfg)
        self.info = info_words(cfg, neuron_lanes, sample_lanes)
        n0, nL = cfg.layers[0], cfg.layers[-1]
        self.params = [np.zeros((o, i + 1), np.int64) for o, i in cfg.layer_shapes]
        self.x = np.zeros((cfg.max_batch, n0), np.int64)
        self.t = np.zeros((cfg.max_batch, nL), np.int64)
        self.y = np.zeros((cfg.max_batch, nL), np.int64)
        self.set_x = np.zeros((cfg.max_samples, n0), np.int64)  # the training set (TRAIN_STEPS)
        self.set_t = np.zeros((cfg.max_samples, nL), np.int64)
        self.losses = [0] * (2 * cfg.max_directions + 1)
        self.steps = [0] * cfg.max_directions
        self.regs = {Reg.BATCH: 1, Reg.SEED: 0, Reg.DIRECTIONS: 1, Reg.SIGMA: 64, Reg.GAIN_MANT: 0,
                     Reg.GAIN_SHIFT: 1, Reg.CLIP: 0, Reg.MODE: 0, Reg.LAYER_START: 0, Reg.SAMPLES: 1,
                     Reg.DATA_SEED: 0}
        self.limits = {Reg[name.upper()]: limits for name, limits in register_limits(cfg).items()}
        self.counters = {"spike_fanout": 0, "spikes": [0] * (len(cfg.layers) - 2)}
        self.param_pos = 0  # canonical index of the parameter pointer
        self.sample, self.field, self.out_field = 0, 0, 0
        self.set_sample, self.set_field = 0, 0  # the training set's write pointer

    # ---- the parameter pointer walks the flattened canonical order ----------------------------------
    def _param_slot(self, pos: int) -> tuple[int, int]:
        for l, p in enumerate(self.params):
            if pos < p.size:
                return l, pos
            pos -= p.size
        raise IndexError

    def step_params(self) -> StepParams:
        r, mode = self.regs, self.regs[Reg.MODE]
        return StepParams(seed=r[Reg.SEED], directions=r[Reg.DIRECTIONS], sigma=r[Reg.SIGMA],
                          gain_mant=r[Reg.GAIN_MANT], gain_shift=r[Reg.GAIN_SHIFT], clip=r[Reg.CLIP],
                          noise="gauss4" if mode & Mode.GAUSS4 else "rademacher",
                          difference="forward" if mode & Mode.FORWARD else "central",
                          scope="layerwise" if mode & Mode.LAYERWISE else "global",
                          layer_start=r[Reg.LAYER_START], stochastic_rounding=bool(mode & Mode.STOCHASTIC_ROUNDING))

    def execute(self, op: int, index: int, data: int) -> tuple[int, int]:
        cfg = self.cfg
        data &= MASK64
        ok = lambda value=0: (Status.OK, int(value) & MASK64)  # noqa: E731
        refuse = (Status.RANGE, 0)
        if op == Op.NOP:
            return ok()
        if op == Op.INFO:
            return ok(self.info[index]) if index < len(self.info) else refuse
        if op == Op.SET:
            if index not in self.limits:
                return refuse
            lo, hi = self.limits[Reg(index)]
            if not lo <= data <= hi:
                return refuse
            self.regs[Reg(index)] = data
            return ok()
        if op == Op.PARAM_REWIND:
            self.param_pos = 0
            return ok()
        if op in (Op.PARAM_WRITE, Op.PARAM_READ):
            if self.param_pos >= cfg.n_params:
                return refuse
            l, k = self._param_slot(self.param_pos)
            flat = self.params[l].reshape(-1)
            if op == Op.PARAM_WRITE:
                if not fits_signed(data, cfg.w_bits):
                    return refuse
                flat[k] = signed64(data)
                self.param_pos += 1
                return ok()
            self.param_pos += 1
            return ok(flat[k])
        if op == Op.SAMPLE_SEEK:
            if data >= cfg.max_batch:
                return refuse
            self.sample, self.field, self.out_field = data, 0, 0
            return ok()
        if op in (Op.SAMPLE_WRITE, Op.DATA_WRITE):
            n0, nL = cfg.layers[0], cfg.layers[-1]
            into_set = op == Op.DATA_WRITE
            sample, fld = (self.set_sample, self.set_field) if into_set else (self.sample, self.field)
            depth = cfg.max_samples if into_set else cfg.max_batch
            is_x = fld < n0
            if sample >= depth or not fits_signed(data, cfg.x_bits if is_x else cfg.y_bits):
                return refuse
            xs, ts = (self.set_x, self.set_t) if into_set else (self.x, self.t)
            if is_x:
                xs[sample, fld] = signed64(data)
            else:
                ts[sample, fld - n0] = signed64(data)
            fld += 1
            if fld == n0 + nL:
                fld, sample = 0, sample + 1
            if into_set:
                self.set_sample, self.set_field = sample, fld
            else:
                self.sample, self.field = sample, fld
            return ok()
        if op == Op.DATA_SEEK:
            if data >= cfg.max_samples:
                return refuse
            self.set_sample, self.set_field = data, 0
            return ok()
        if op == Op.OUTPUT_READ:
            if self.sample >= cfg.max_batch:
                return refuse
            v = self.y[self.sample, self.out_field]
            self.out_field += 1
            if self.out_field == cfg.layers[-1]:
                self.out_field, self.sample = 0, self.sample + 1
            return ok(v)
        if op == Op.INFER:
            b = self.regs[Reg.BATCH]
            before = self.model.counters.spikes[:], self.model.counters.spike_fanout
            self.y[:b] = self.model.infer(self.params, self.x[:b])
            self._count(before)
            loss = int(np.minimum(((self.y[:b] - self.t[:b]) ** 2).sum(), cfg.loss_max))
            self.losses[0] = loss
            return ok(loss)
        if op == Op.TRAIN_STEP:
            return ok(self._train_step())
        if op == Op.TRAIN_STEPS:
            if not 1 <= data <= MAX_RUN_STEPS or cfg.max_samples == 0:
                return refuse
            r, b, total = self.regs, self.regs[Reg.BATCH], 0
            for _ in range(data):
                draw = streams.draw_step(r[Reg.DATA_SEED], r[Reg.SAMPLES], b, cfg)
                r[Reg.SEED], r[Reg.DATA_SEED] = draw.seed, draw.next_state
                self.x[:b], self.t[:b] = self.set_x[draw.indices], self.set_t[draw.indices]
                n = self._train_step()
                total += base_loss(self.losses[:n], self.step_params().difference)
                r[Reg.LAYER_START] = streams.layer_start_after(r[Reg.LAYER_START], 1, r[Reg.DIRECTIONS], cfg.n_layers)
            return ok(total)
        if op == Op.READ_LOSS:
            return ok(self.losses[index]) if index < len(self.losses) else refuse
        if op == Op.READ_STEP:
            return ok(self.steps[index]) if index < len(self.steps) else refuse
        if op == Op.READ_COUNTER:
            values = [0, 0, self.counters["spike_fanout"]] + self.counters["spikes"]
            return ok(values[index]) if index < len(values) else refuse
        if op == Op.CLEAR_COUNTERS:
            self.counters = {"spike_fanout": 0, "spikes": [0] * (len(cfg.layers) - 2)}
            return ok()
        return Status.UNKNOWN, 0

    def _train_step(self) -> int:
        """One training step on the loaded batch; returns the number of losses."""
        b = self.regs[Reg.BATCH]
        before = self.model.counters.spikes[:], self.model.counters.spike_fanout
        self.params, res = self.model.train_step(self.params, self.x[:b], self.t[:b], self.step_params())
        self._count(before)
        self.losses[:len(res.losses)] = res.losses
        self.steps[:len(res.steps)] = res.steps
        self.param_pos = self.cfg.n_params  # the update pass leaves the pointer past the end, as the RTL does
        return len(res.losses)

    # ---- bulk forms of the pointer commands: the same effects as repeated execute() calls, for speed ----
    def write_many(self, op: int, values) -> tuple[int, int]:
        """PARAM_WRITE, SAMPLE_WRITE or DATA_WRITE of each value in turn; stops at the first refusal.
        Returns (status, number written)."""
        cfg = self.cfg
        vals = np.asarray(values, np.int64)
        k = np.arange(len(vals))
        into_set = op == Op.DATA_WRITE
        if op in (Op.SAMPLE_WRITE, Op.DATA_WRITE):
            n0, per = cfg.layers[0], cfg.layers[0] + cfg.layers[-1]
            start = (self.set_sample * per + self.set_field) if into_set else (self.sample * per + self.field)
            flat = start + k
            sample, fld = flat // per, flat % per
            bits = np.where(fld < n0, cfg.x_bits, cfg.y_bits)
            depth = cfg.max_samples if into_set else cfg.max_batch
            ok = (sample < depth) & (vals >= -(1 << (bits - 1))) & (vals < (1 << (bits - 1)))
        elif op == Op.PARAM_WRITE:
            flat = self.param_pos + k
            ok = (flat < cfg.n_params) & (vals >= cfg.w_range[0]) & (vals <= cfg.w_range[1])
        else:
            raise ValueError(f"write_many takes SAMPLE_WRITE, DATA_WRITE or PARAM_WRITE, not {op}")
        n = len(vals) if ok.all() else int(np.argmin(ok))
        if op in (Op.SAMPLE_WRITE, Op.DATA_WRITE):
            m = slice(0, n)
            is_x = fld[m] < n0
            xs, ts = (self.set_x, self.set_t) if into_set else (self.x, self.t)
            xs[sample[m][is_x], fld[m][is_x]] = vals[m][is_x]
            ts[sample[m][~is_x], fld[m][~is_x] - n0] = vals[m][~is_x]
            if into_set:
                self.set_sample, self.set_field = divmod(int(start + n), per)
            else:
                self.sample, self.field = divmod(int(start + n), per)
        else:
            whole = np.concatenate([q.reshape(-1) for q in self.params])
            whole[self.param_pos:self.param_pos + n] = vals[:n]
            self.params = [a.reshape(q.shape) for a, q in
                           zip(np.split(whole, np.cumsum([q.size for q in self.params])[:-1]), self.params)]
            self.param_pos += n
        return (Status.OK if n == len(vals) else Status.RANGE), n

    def read_many(self, op: int, count: int) -> tuple[int, list[int]]:
        """PARAM_READ or OUTPUT_READ count times; stops at the first refusal. Values are signed."""
        if op == Op.OUTPUT_READ and self.sample + (self.out_field + count - 1) // self.cfg.layers[-1] < self.cfg.max_batch:
            nL = self.cfg.layers[-1]
            start = self.sample * nL + self.out_field
            vals = self.y.reshape(-1)[start:start + count].tolist()
            self.sample, self.out_field = divmod(start + count, nL)
            return Status.OK, vals
        if op == Op.PARAM_READ and self.param_pos + count <= self.cfg.n_params:
            flat = np.concatenate([p.reshape(-1) for p in self.params])
            vals = flat[self.param_pos:self.param_pos + count].tolist()
            self.param_pos += count
            return Status.OK, vals
        out = []
        for _ in range(count):
            status, d = self.execute(op, 0, 0)
            if status != Status.OK:
                return status, out
            out.append(signed64(d))
        return Status.OK, out

    def seek_param(self, position: int) -> None:
        """PARAM_REWIND, then `position` PARAM_READs (the pointer walks forward only)."""
        self.param_pos = min(position, self.cfg.n_params)

    def _count(self, before) -> None:
        spikes, fanout = before
        c = self.model.counters
        self.counters["spikes"] = [a + (n - o) for a, n, o in zip(self.counters["spikes"], c.spikes, spikes)]
        self.counters["spike_fanout"] += c.spike_fanout - fanout

    async def transact(self, op: int, index: int, data: int) -> tuple[int, int]:
        """The `transact` coroutine LearnerSession takes."""
        return self.execute(op, index, data)
