"""The golden model: what the chip computes, to the bit (docs/fixed-point.md in code).

Integers throughout. For speed the hot path holds them in floating-point arrays, which is exact because
every value and every partial sum stays below 2**53 in float64 (DeviceConfig.validate checks the widths)
and below 2**24 in the float32 time loop (checked in GoldenModel.__init__), and lets the weight sums run
as BLAS matrix products. The per-step logic is vectorised over the batch and over all
perturbed copies of the network (2K for central differences), so there is no per-sample Python loop.

Parameters are a list, one entry per weight layer, of augmented integer matrices [W | b] of shape
(n_out, n_in + 1): row i holds neuron i's incoming weights then its bias. That row-major order is
also the canonical weight order of the contract (noise factors, stochastic-rounding bits, weight RAM).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contract import lfsr
from .contract.config import ConfigError, DeviceConfig, StepParams
from .contract.neuron import first_layer_counts, first_layer_trains, lif_update  # noqa: F401 (the element-wise rule)


# ---- fixed-point primitives (each one is a sentence of docs/fixed-point.md) ----------------------
def sat(a, lo: int, hi: int):
    """Saturate to [lo, hi]: the device never wraps."""
    return np.clip(a, lo, hi)


def rshift_round(a, n: int):
    """Arithmetic shift right by n with round-half-up: floor((a + 2**(n-1)) / 2**n)."""
    if n == 0:
        return a
    return np.floor((a + float(1 << (n - 1))) * (1.0 / (1 << n)))


def rshift_round_int(a: int, n: int) -> int:
    return (a + (1 << (n - 1))) >> n if n else a


def perturbed(w: np.ndarray, a: np.ndarray, b: np.ndarray, signed_sigma: int, cfg: DeviceConfig) -> np.ndarray:
    """The weights a perturbed pass reads: sat_w(w + (+/-sigma) * a_i * b_j) over [W | b] (rank-one v = a b^T)."""
    return np.clip(w + signed_sigma * np.multiply.outer(a, b), *cfg.w_range)


def step_value(loss_diff: int, sp: StepParams) -> int:
    """A direction's scalar step: clamp(rsr(dL * gain_mant, gain_shift), -clip, clip), in 2**-step_frac LSBs."""
    s = rshift_round_int(int(loss_diff) * sp.gain_mant, sp.gain_shift)
    return max(-sp.clip, min(sp.clip, s))


def apply_update(w: np.ndarray, delta: np.ndarray, rnd, cfg: DeviceConfig) -> np.ndarray:
    """w <- sat_w(w - ((delta + r) >> step_frac)): r is the stochastic-rounding draw or 2**(step_frac-1)."""
    w, delta = np.asarray(w, np.int64), np.asarray(delta, np.int64)
    return np.clip(w - ((delta + rnd) >> cfg.step_frac), *cfg.w_range)


def input_current(w_row: np.ndarray, bias: np.ndarray, x: np.ndarray, cfg: DeviceConfig) -> np.ndarray:
    """Input-layer current on int64 arrays: sat_u(rsr(sum_j w[..., j] * x[..., j], x_frac) + b).

    Element-wise statement of docs/fixed-point.md section 2 (input coding), for checking gateware.
    """
    acc = (np.asarray(w_row, np.int64) * np.asarray(x, np.int64)).sum(axis=-1)
    return np.clip(rshift_round_int(acc, cfg.x_frac) + np.asarray(bias, np.int64), *cfg.u_range)


@dataclass
class Counters:
    """What the hardware cares about, accumulated over calls."""

    forward_passes: int = 0  # one network evaluation over one batch
    samples: int = 0  # forward passes x batch size
    spikes: list[int] = field(default_factory=list)  # per hidden layer
    spike_fanout: int = 0  # spikes x fan-out: the additions an event-driven network calls for, incl. the readout's
    input_macs: int = 0  # input-layer multiply-accumulates (once per sample, not per time step)
    update_passes: int = 0
    weight_updates: int = 0

    def add(self, other: "Counters") -> None:
        self.forward_passes += other.forward_passes
        self.samples += other.samples
        if not self.spikes:
            self.spikes = [0] * len(other.spikes)
        self.spikes = [a + b for a, b in zip(self.spikes, other.spikes)]
        self.spike_fanout += other.spike_fanout
        self.input_macs += other.input_macs
        self.update_passes += other.update_passes
        self.weight_updates += other.weight_updates

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StepResult:
    losses: list[int]  # per evaluated network, in evaluation order (central: +,- per direction; forward: base, then +)
    loss_diffs: list[int]  # per direction
    steps: list[int]  # per direction, in 2**-step_frac weight LSBs, after the clip
    counters: Counters


def base_loss(losses: list[int], difference: str) -> int:
    """The unperturbed loss (forward difference) or the mean of the +/- pair of direction 0 (central),
    from a step's losses in evaluation order (docs/fixed-point.md section 7)."""
    return losses[0] if difference == "forward" else (losses[0] + losses[1]) >> 1


class GoldenModel:
    def __init__(self, cfg: DeviceConfig):
        self.cfg = cfg
        self.counters = Counters(spikes=[0] * (len(cfg.layers) - 2))
        # The time loop (membranes, event sums, spike counts) runs in float32 when every value it forms
        # is an integer of magnitude <= 2**24, which float32 holds exactly: membrane sums stay within
        # 2 * 2**(u_bits-1) and an event sum within (fan-in + 1) * 2**(w_bits-1). Half the memory traffic
        # of float64, same integers. The input products and the readout stay in float64.
        fan_in = max(cfg.layers[1:-2], default=0)
        exact32 = cfg.u_bits <= 24 and (fan_in + 1) * (1 << (cfg.w_bits - 1)) <= 1 << 24
        self.loop_dtype = np.float32 if exact32 else np.float64
        self.first_layer_trains = first_layer_trains(cfg)
        self.first_layer_counts = first_layer_counts(cfg)  # spikes per current

    # ---- parameter handling ------------------------------------------------------------------------
    def check_params(self, params: list[np.ndarray]) -> list[np.ndarray]:
        cfg = self.cfg
        if len(params) != cfg.n_layers:
            raise ConfigError(f"expected {cfg.n_layers} weight layers, got {len(params)}")
        out = []
        lo, hi = cfg.w_range
        for l, (p, (o, i)) in enumerate(zip(params, cfg.layer_shapes)):
            p = np.asarray(p)
            if p.shape != (o, i + 1):
                raise ConfigError(f"layer {l}: expected [W | b] of shape {(o, i + 1)}, got {p.shape}")
            if p.min() < lo or p.max() > hi:
                raise ConfigError(f"layer {l}: weights outside the {cfg.w_bits}-bit range [{lo}, {hi}]")
            out.append(p.astype(np.int64))
        return out

    def check_batch(self, x: np.ndarray, t: np.ndarray | None = None) -> None:
        cfg = self.cfg
        if x.ndim != 2 or x.shape[1] != cfg.layers[0]:
            raise ConfigError(f"inputs must have shape (batch, {cfg.layers[0]}), got {x.shape}")
        if not 1 <= x.shape[0] <= cfg.max_batch:
            raise ConfigError(f"batch of {x.shape[0]} samples; the device holds 1..{cfg.max_batch}")
        lo, hi = cfg.x_range
        if x.min() < lo or x.max() > hi:
            raise ConfigError(f"inputs outside the {cfg.x_bits}-bit range [{lo}, {hi}]")
        if t is not None:
            if t.shape != (x.shape[0], cfg.layers[-1]):
                raise ConfigError(f"targets must have shape {(x.shape[0], cfg.layers[-1])}, got {t.shape}")
            lo, hi = cfg.y_range
            if t.min() < lo or t.max() > hi:
                raise ConfigError(f"targets outside the {cfg.y_bits}-bit range [{lo}, {hi}]")

    # ---- forward pass over V network variants at once ---------------------------------------------------
    def _forward_counted(self, aug, x):
        """Forward pass of V network variants at once.

        aug[l]: (V, n_out, n_in+1) integers held in float64; x: (B, n0). The first hidden layer's spikes
        come from its spike-train table (first_layer_trains); the deeper layers run the time loop in
        self.loop_dtype (float32 where exact). Returns y (V, B, n_out) and counters.
        """
        cfg = self.cfg
        ulo, uhi = cfg.u_range
        theta = float(cfg.threshold_q)
        leak = 1.0 / (1 << cfg.leak_shift)
        W0 = aug[0][:, :, :-1]
        i_in = sat(rshift_round(np.matmul(x.astype(np.float64), W0.transpose(0, 2, 1)), cfg.x_frac)
                   + aug[0][:, None, :, -1], ulo, uhi)
        column = np.clip(i_in, 0, theta).astype(np.intp)  # exact: see first_layer_trains
        trains = self.first_layer_trains
        hidden = aug[:-1]
        dt = self.loop_dtype
        totals = [self.first_layer_counts[column].astype(dt)]
        if len(hidden) > 1:
            shape = [(aug[0].shape[0], x.shape[0], a.shape[1]) for a in hidden]
            U = [None] + [np.zeros(s, dt) for s in shape[1:]]
            totals += [np.zeros(s, dt) for s in shape[1:]]
            spikes = [np.empty(s, dt) for s in shape]
            tmp = [None] + [np.empty(s, dt) for s in shape[1:]]
            w_hidden = [None] + [a[:, :, :-1].transpose(0, 2, 1).astype(dt) for a in hidden[1:]]
            b_hidden = [None] + [a[:, None, :, -1].astype(dt) for a in hidden[1:]]
            # Saturation is skipped where it provably cannot act (same result, fewer passes over
            # memory): with |I| <= Imax, U_{t+1} = U - floor(U / 2^k) + I stays within (Imax + 1) 2^k.
            imax = [None] + [float(np.minimum(uhi, (np.abs(a[:, :, :-1]).sum(axis=2) + np.abs(a[:, :, -1])).max()))
                             for a in hidden[1:]]
            clip_u = [None] + [(m + 1) * (1 << cfg.leak_shift) + theta > min(-ulo, uhi) for m in imax[1:]]
            clip_i = [None] + [m >= min(-ulo, uhi) for m in imax[1:]]
            for t in range(cfg.t_steps):
                spikes[0][...] = trains[t][column]
                for l in range(1, len(hidden)):
                    cur = np.matmul(spikes[l - 1], w_hidden[l])
                    cur += b_hidden[l]
                    if clip_i[l]:
                        np.clip(cur, ulo, uhi, out=cur)
                    u, tm, s = U[l], tmp[l], spikes[l]
                    np.multiply(u, leak, out=tm)  # leak: U - (U >> k)
                    np.floor(tm, out=tm)
                    u -= tm
                    u += cur  # integrate
                    if clip_u[l]:
                        np.clip(u, ulo, uhi, out=u)
                    np.greater_equal(u, theta, out=s)  # compare
                    np.multiply(s, theta, out=tm)
                    u -= tm  # reset by subtraction
                    totals[l] += s
        count = totals[-1].astype(np.float64)
        y_acc = np.matmul(count, aug[-1][:, :, :-1].transpose(0, 2, 1))
        ylo, yhi = cfg.y_range
        y = sat(rshift_round(y_acc, cfg.t_shift) + aug[-1][:, None, :, -1], ylo, yhi)
        V, B = y.shape[:2]
        c = Counters(forward_passes=V, samples=V * B, spikes=[int(t.sum()) for t in totals])
        c.spike_fanout = sum(int(totals[l].sum()) * cfg.layers[l + 2] for l in range(len(hidden)))
        c.input_macs = V * B * cfg.layers[0] * cfg.layers[1]
        return y, c

    def _losses(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        err = y - t.astype(np.float64)[None]
        return np.minimum((err * err).sum(axis=(1, 2)), float(self.cfg.loss_max)).astype(np.int64)

    # ---- public API --------------------------------------------------------------------------------
    def infer(self, params, x: np.ndarray) -> np.ndarray:
        """Outputs (B, n_out) as integers in Q(y_bits, w_frac)."""
        params = self.check_params(params)
        x = np.asarray(x, np.int64)
        out = []
        for start in range(0, x.shape[0], self.cfg.max_batch):  # the device runs one loaded batch at a time
            xb = x[start:start + self.cfg.max_batch]
            self.check_batch(xb)
            y, c = self._forward_counted([p[None].astype(np.float64) for p in params], xb)
            self.counters.add(c)
            out.append(y[0].astype(np.int64))
        return np.concatenate(out)

    def loss(self, params, x: np.ndarray, t: np.ndarray) -> int:
        """Summed squared error over the batch, in 2*w_frac fractional bits, saturating at loss_max."""
        params = self.check_params(params)
        x, t = np.asarray(x, np.int64), np.asarray(t, np.int64)
        self.check_batch(x, t)
        y, c = self._forward_counted([p[None].astype(np.float64) for p in params], x)
        self.counters.add(c)
        return int(self._losses(y, t)[0])

    def directions(self, sp: StepParams) -> tuple[list[dict[int, tuple[np.ndarray, np.ndarray]]], int]:
        """Rank-one noise factors of every direction of a step, and how many stream bits they used.

        Direction k, for each layer it perturbs in ascending order, draws a (n_out values) then b
        (n_in + 1 values) from the step's LFSR stream; v = a b^T over [W | b].
        """
        cfg = self.cfg
        per_value = 1 if sp.noise == "rademacher" else 4
        plan = []
        n_bits = 0
        for k in range(sp.directions):
            layers = range(cfg.n_layers) if sp.scope == "global" else [(sp.layer_start + k) % cfg.n_layers]
            plan.append(list(layers))
            for l in layers:
                o, i = cfg.layer_shapes[l]
                n_bits += (o + i + 1) * per_value
        bits = lfsr.stream_bits(sp.seed, n_bits, cfg.lfsr_width, cfg.lfsr_taps).astype(np.int64)
        if per_value == 1:
            values = 1 - 2 * bits  # bit 0 -> +1, bit 1 -> -1
        else:
            values = bits.reshape(-1, 4).sum(axis=1) - 2  # centred binomial(4, 1/2): {-2..2}, variance 1
        out, pos = [], 0
        for entry in plan:
            d = {}
            for l in entry:
                o, i = cfg.layer_shapes[l]
                a = values[pos:pos + o]
                b = values[pos + o:pos + o + i + 1]
                pos += o + i + 1
                d[l] = (a, b)
            out.append(d)
        return out, n_bits

    def train_step(self, params, x: np.ndarray, t: np.ndarray, sp: StepParams):
        """One training step on the loaded batch: K directions, the losses, the steps, the update.

        Returns (new_params, StepResult). Deterministic from (config, params, batch, step params).
        """
        cfg = self.cfg
        sp.validate(cfg)
        params = self.check_params(params)
        x, t = np.asarray(x, np.int64), np.asarray(t, np.int64)
        self.check_batch(x, t)
        dirs, n_noise_bits = self.directions(sp)
        base = [p.astype(np.float64) for p in params]

        # Every network variant this step evaluates, in the device's order.
        signs: list[tuple[int, int]] = []  # (direction, +1/-1) or (-1, 0) for the unperturbed network
        if sp.difference == "forward":
            signs.append((-1, 0))
        for k in range(sp.directions):
            signs.append((k, +1))
            if sp.difference == "central":
                signs.append((k, -1))
        aug = []
        for l in range(cfg.n_layers):
            stack = np.empty((len(signs),) + base[l].shape)
            for v, (k, sgn) in enumerate(signs):
                if k >= 0 and l in dirs[k]:
                    a, b = dirs[k][l]
                    stack[v] = perturbed(base[l], a, b, sgn * sp.sigma, cfg)
                else:
                    stack[v] = base[l]
            aug.append(stack)
        y, counters = self._forward_counted(aug, x)
        losses = [int(v) for v in self._losses(y, t)]

        # The scalar step of each direction: the loss difference times the host's gain, clipped.
        diffs, steps = [], []
        for k in range(sp.directions):
            if sp.difference == "central":
                d = losses[2 * k] - losses[2 * k + 1]
            else:
                d = losses[1 + k] - losses[0]
            diffs.append(d)
            steps.append(step_value(d, sp))

        # The update pass: replay the directions, w <- sat(w - round(sum_k step_k v_k)).
        F = cfg.step_frac
        n_sr = cfg.n_params * F if sp.stochastic_rounding else 0
        if n_sr:
            bits = lfsr.stream_bits(sp.seed, n_noise_bits + n_sr, cfg.lfsr_width, cfg.lfsr_taps)[n_noise_bits:]
            rnd_all = (bits.reshape(-1, F).astype(np.int64) << np.arange(F, dtype=np.int64)).sum(axis=1)  # LSB first
        new, pos = [], 0
        for l, p in enumerate(params):
            delta = np.zeros(p.shape, np.int64)
            for k in range(sp.directions):
                if l in dirs[k] and steps[k]:
                    a, b = dirs[k][l]
                    delta += steps[k] * np.outer(a, b)
            if n_sr:
                rnd = rnd_all[pos:pos + p.size].reshape(p.shape)
            else:
                rnd = 1 << (F - 1)
            pos += p.size
            new.append(apply_update(p, delta, rnd, cfg))
        counters.update_passes = 1
        counters.weight_updates = cfg.n_params
        self.counters.add(counters)
        return new, StepResult(losses=losses, loss_diffs=diffs, steps=steps, counters=counters)


def split_params(params: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[W | b] matrices -> (W, b) pairs."""
    return [(p[:, :-1], p[:, -1]) for p in params]


def join_params(pairs) -> list[np.ndarray]:
    """(W, b) pairs -> [W | b] matrices."""
    return [np.concatenate([np.asarray(W), np.asarray(b)[:, None]], axis=1) for W, b in pairs]
