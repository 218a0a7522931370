"""Float64 reference of the device's spiking network (the golden model for gradients).

Network ``layers = (n0, n1, ..., nL)``: ``n0`` inputs, LIF hidden layers ``1..L-1`` and a
non-spiking linear readout ``L``. Parameters are a list of ``(W_l, b_l)`` pairs,
``W_l`` of shape ``(n_l, n_{l-1})`` and ``b_l`` of shape ``(n_l,)``.

Per sample (direct coding, the input current of layer 1 is constant in time)::

    I1 = x @ W1.T + b1
    U_l = 0 ; count = 0
    for t in range(T):
        for hidden l = 1..L-1:
            I   = I1 if l == 1 else s_{l-1} @ W_l.T + b_l
            U_l = lam * U_l + I            # leak then integrate, lam = 1 - 2**-leak_shift
            s_l = S(U_l)                   # Heaviside(U_l - theta), H(0) = 1
            U_l = U_l - theta * s_l        # reset by subtraction
        count += s_{L-1}
    y    = (count / T) @ W_L.T + b_L
    loss = sum((y - target)**2) / B        # batch mean of the summed squared error

Spike functions (``spec.spike``):

* ``"heaviside"``: the real SNN. Gradient code replaces H' by the surrogate below.
* ``"sigmoid"``: a smooth stand-in whose *true* derivative is exactly the surrogate, so
  finite differences of this network check gradient code exactly. It is the fast-sigmoid
  step ``S(u) = 0.5 * (1 + k z / (1 + k |z|))``, ``z = u - theta``, ``k = spec.slope``.

Surrogate derivative: the fast sigmoid normalised to unit area,
``S'(u) = (k / 2) / (1 + k |u - theta|)**2``. This is the snnTorch/SuperSpike shape
``1 / (1 + k|z|)**2`` times the constant ``k/2``; the factor is chosen so that the
surrogate is the derivative of a step from 0 to 1 (like the Heaviside it replaces, with
unit area like the Dirac delta), which makes the smooth stand-in a proper spike
probability in (0, 1) rather than a function confined to (0.5 - 1/k, 0.5 + 1/k).

All functions accept parameters with extra leading axes (e.g. ``W`` of shape
``(V, n_l, n_{l-1})``, ``b`` of shape ``(V, n_l)``) and broadcast over them; ``forward_many``
and ``loss_many`` are the names to use for that case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Params = list[tuple[np.ndarray, np.ndarray]]

SPIKES = ("heaviside", "sigmoid")


@dataclass(frozen=True)
class FloatNetSpec:
    layers: tuple[int, ...]
    T: int = 16
    leak_shift: int = 3
    theta: float = 1.0
    spike: str = "heaviside"
    slope: float = 5.0
    detach_reset: bool = False

    def __post_init__(self) -> None:
        layers = tuple(int(n) for n in self.layers)
        object.__setattr__(self, "layers", layers)
        if len(layers) < 3:
            raise ValueError(f"need inputs, >= 1 hidden LIF layer and a readout; got layers={layers}")
        if min(layers) < 1:
            raise ValueError(f"layer sizes must be positive; got {layers}")
        if int(self.T) < 1:
            raise ValueError(f"T must be >= 1; got {self.T}")
        if int(self.leak_shift) < 0:
            raise ValueError(f"leak_shift must be >= 0; got {self.leak_shift}")
        if not self.theta > 0:
            raise ValueError(f"theta must be > 0; got {self.theta}")
        if self.spike not in SPIKES:
            raise ValueError(f"spike must be one of {SPIKES}; got {self.spike!r}")
        if not self.slope > 0:
            raise ValueError(f"slope must be > 0; got {self.slope}")

    @property
    def lam(self) -> float:
        """Leak factor ``1 - 2**-leak_shift`` (exact in binary, as on the device)."""
        return 1.0 - 2.0 ** (-int(self.leak_shift))

    @property
    def n_weight_layers(self) -> int:
        """L: number of (W, b) pairs (hidden layers + readout)."""
        return len(self.layers) - 1

    @property
    def shapes(self) -> list[tuple[tuple[int, int], tuple[int]]]:
        return [((o, i), (o,)) for i, o in zip(self.layers[:-1], self.layers[1:])]

    @property
    def layer_sizes(self) -> list[int]:
        """Number of parameters of each layer, ``n_l * (n_{l-1} + 1)``."""
        return [o * (i + 1) for i, o in zip(self.layers[:-1], self.layers[1:])]


# ----------------------------------------------------------------------------- spikes


def spike_fn(spec: FloatNetSpec, u: np.ndarray) -> np.ndarray:
    """Spike output for membrane potential ``u`` (Heaviside with H(0)=1, or the smooth step)."""
    if spec.spike == "heaviside":
        return (u >= spec.theta).astype(np.result_type(u, np.float64))
    z = u - spec.theta
    k = spec.slope
    return 0.5 * (1.0 + k * z / (1.0 + k * np.abs(z)))


def surrogate_grad(spec: FloatNetSpec, u: np.ndarray) -> np.ndarray:
    """dS/dU used by gradient code: unit-area fast sigmoid (exact derivative of the smooth step)."""
    k = spec.slope
    return (0.5 * k) / (1.0 + k * np.abs(u - spec.theta)) ** 2


# ----------------------------------------------------------------------------- params


def n_params(spec: FloatNetSpec) -> int:
    return int(sum(spec.layer_sizes))


def flatten(params: Params) -> np.ndarray:
    """Canonical vector: layer by layer, W row-major (row = output neuron), then b.

    Extra leading axes are kept: ``W (..., o, i)``, ``b (..., o)`` give ``(..., d)``.
    """
    parts = []
    for W, b in params:
        W = np.asarray(W)
        b = np.asarray(b)
        lead = W.shape[:-2]
        parts.append(W.reshape(lead + (-1,)))
        parts.append(b.reshape(lead + (-1,)))
    return np.concatenate(parts, axis=-1)


def unflatten(spec: FloatNetSpec, vec: np.ndarray) -> Params:
    """Inverse of :func:`flatten`; ``vec (..., d)`` gives params with the same leading axes."""
    vec = np.asarray(vec)
    d = n_params(spec)
    if vec.shape[-1] != d:
        raise ValueError(f"expected last axis {d}, got shape {vec.shape}")
    lead = vec.shape[:-1]
    out: Params = []
    pos = 0
    for (o, i), _ in spec.shapes:
        W = vec[..., pos:pos + o * i].reshape(lead + (o, i))
        pos += o * i
        b = vec[..., pos:pos + o].reshape(lead + (o,))
        pos += o
        out.append((np.array(W), np.array(b)))
    return out


def layer_slices(spec: FloatNetSpec) -> list[slice]:
    """Slice of each layer's block (W then b) in the canonical flat vector."""
    out, pos = [], 0
    for size in spec.layer_sizes:
        out.append(slice(pos, pos + size))
        pos += size
    return out


def _check_params(spec: FloatNetSpec, params: Params, lead_ndim: int | None = None) -> None:
    if len(params) != spec.n_weight_layers:
        raise ValueError(f"expected {spec.n_weight_layers} (W, b) pairs, got {len(params)}")
    for l, ((W, b), ((o, i), _)) in enumerate(zip(params, spec.shapes)):
        if W.shape[-2:] != (o, i) or b.shape[-1] != o or W.shape[:-2] != b.shape[:-1]:
            raise ValueError(f"layer {l + 1}: W {W.shape}, b {b.shape} do not match ({o}, {i})")
        if lead_ndim is not None and W.ndim - 2 != lead_ndim:
            raise ValueError(f"layer {l + 1}: expected {lead_ndim} leading axes, W has shape {W.shape}")


# ----------------------------------------------------------------------------- forward


def _run_hidden(spec: FloatNetSpec, hidden: Params, x: np.ndarray, all_layers: bool) -> list[np.ndarray]:
    """Spike counts over T steps of the hidden layers (all of them, or only the last one).

    Same arithmetic as the definition (``P = lam * U + I``, ``U = P - theta * s``) done in
    place (bitwise the same results).
    """
    lam, theta = spec.lam, spec.theta
    heaviside = spec.spike == "heaviside"
    WT = [np.swapaxes(W, -1, -2) for W, _ in hidden]
    I1 = np.matmul(x, WT[0]) + hidden[0][1][..., None, :]
    H = len(hidden)
    U: list = [None] * H
    counts: list = [None] * H
    for t in range(spec.T):
        s = None
        for h in range(H):
            I = I1 if h == 0 else np.matmul(s, WT[h]) + hidden[h][1][..., None, :]
            if t == 0:
                U[h] = np.array(I, dtype=np.float64)  # lam * 0 + I
            else:
                U[h] *= lam
                U[h] += I
            if heaviside:
                s = (U[h] >= theta).astype(np.float64)  # H(0) = 1
            else:
                s = spike_fn(spec, U[h])
            U[h] -= theta * s
            if all_layers or h == H - 1:
                counts[h] = s.copy() if t == 0 else np.add(counts[h], s, out=counts[h])
    return counts if all_layers else counts[-1:]


def simulate_hidden(spec: FloatNetSpec, params: Params, x: np.ndarray) -> list[np.ndarray]:
    """Time-averaged spike rates of every hidden layer, ``[(..., B, n_l) for l = 1..len(params)]``.

    ``params`` may hold only the first few (hidden) layers; used by :func:`init_params` and
    for diagnostics. Leading parameter axes broadcast.
    """
    x = np.asarray(x, dtype=np.float64)
    return [c / spec.T for c in _run_hidden(spec, params, x, all_layers=True)]


def _forward(spec: FloatNetSpec, params: Params, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != spec.layers[0]:
        raise ValueError(f"x must have shape (B, {spec.layers[0]}); got {x.shape}")
    r = _run_hidden(spec, params[:-1], x, all_layers=False)[0] / spec.T
    WL, bL = params[-1]
    return np.matmul(r, np.swapaxes(WL, -1, -2)) + bL[..., None, :]


def forward(spec: FloatNetSpec, params: Params, x: np.ndarray) -> np.ndarray:
    """Network output ``y (B, nL)`` for a batch ``x (B, n0)``."""
    _check_params(spec, params, lead_ndim=0)
    return _forward(spec, params, x)


def forward_many(spec: FloatNetSpec, params_v: Params, x: np.ndarray) -> np.ndarray:
    """Outputs ``(V, B, nL)`` of V parameter variants (leading axis V on every W and b) at once."""
    _check_params(spec, params_v, lead_ndim=1)
    return _forward(spec, params_v, x)


def _target(spec: FloatNetSpec, target: np.ndarray, B: int) -> np.ndarray:
    target = np.asarray(target, dtype=np.float64)
    nL = spec.layers[-1]
    if target.ndim == 1 and nL == 1 and target.shape[0] == B:
        target = target[:, None]  # (B,) accepted for a scalar output; never broadcast to (B, B)
    if target.shape != (B, nL):
        raise ValueError(f"target must have shape ({B}, {nL}); got {target.shape}")
    return target


def loss_from_output(spec: FloatNetSpec, y: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``sum((y - target)**2) / B`` over the last two axes (leading axes kept)."""
    B = y.shape[-2]
    t = _target(spec, target, B)
    return np.sum((y - t) ** 2, axis=(-2, -1)) / B


def loss(spec: FloatNetSpec, params: Params, x: np.ndarray, target: np.ndarray) -> float:
    return float(loss_from_output(spec, forward(spec, params, x), target))


def loss_many(spec: FloatNetSpec, params_v: Params, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Losses ``(V,)`` of V parameter variants."""
    return loss_from_output(spec, forward_many(spec, params_v, x), target)


# ----------------------------------------------------------------------------- init


def init_params(spec: FloatNetSpec, rng: np.random.Generator, n_probe: int = 256, spread: float = 0.5,
                readout_gain: float = 1.0) -> Params:
    """Initial parameters that put most hidden neurons on the sloped part of their rate curve.

    LIF rate vs constant current I (reset by subtraction): the potential approaches
    I / (1 - lam) without spiking, so a neuron fires within T steps only if
    I >= I_on = theta (1 - lam) / (1 - lam**T), and it saturates at one spike per step
    once I >= theta; in between the rate rises roughly like I / theta. So currents
    should straddle I_on and spread over a range of order theta across the data.

    * Layer 1: W1 ~ N(0, 0.75 theta^2 / n0), so over the input box [-1, 1]^n0 the current
      w.x varies with std |w| / sqrt(3) ~ theta / 2; b1 = I_on - W1 p with p a random
      point of the box, i.e. each neuron's firing-onset hyperplane passes through a random
      point of the domain (a ReLU-like ramp somewhere inside the box, no dead neurons).
    * Deeper hidden layers: W ~ N(0, g / n) with the gain g set (per layer) so that the
      current of a typical neuron varies with std theta / 2 over the input box, measured
      on ``n_probe`` random points of the box (drawn from ``rng``); the bias puts each
      neuron's onset at the rate vector of a random probe point, like layer 1 does.
    * Readout: W_L ~ N(0, readout_gain^2 / n_{L-1}), b_L = 0 (rates are in [0, 1]).

    ``spread`` (default 0.5) is the std of the current over the box in units of theta; steeper
    ramps fit sharper features. A small ``readout_gain`` starts the output near zero, which spares
    zeroth-order training the work of first undoing a random readout.

    Deterministic given ``rng``.
    """
    layers, theta, lam, T = spec.layers, spec.theta, spec.lam, spec.T
    I_on = theta * (1.0 - lam) / (1.0 - lam ** T)
    n0, n1 = layers[0], layers[1]
    params: Params = []
    W1 = rng.normal(0.0, theta * spread * np.sqrt(3.0 / n0), size=(n1, n0))
    p = rng.uniform(-1.0, 1.0, size=(n1, n0))
    b1 = I_on - np.sum(W1 * p, axis=1)
    params.append((W1, b1))
    x_probe = rng.uniform(-1.0, 1.0, size=(n_probe, n0))
    for l in range(2, len(layers) - 1):
        n_in, n_out = layers[l - 1], layers[l]
        r = simulate_hidden(spec, params, x_probe)[-1]  # (n_probe, n_in) rates of layer l-1
        W = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_out, n_in))
        spread_now = np.sqrt(np.mean(np.var(r @ W.T, axis=0)))
        if spread_now > 0:
            W *= (spread * theta) / spread_now
        anchor = r[rng.integers(0, n_probe, size=n_out)]  # (n_out, n_in)
        b = I_on - np.sum(W * anchor, axis=1)
        params.append((W, b))
    n_last = layers[-2]
    WL = rng.normal(0.0, readout_gain / np.sqrt(n_last), size=(layers[-1], n_last))
    params.append((WL, np.zeros(layers[-1])))
    return params
