"""Optimisers over a params list (``[(W, b), ...]``, or any nested list/tuple of float arrays)
and a small learning-rate schedule helper.

``step`` updates the arrays *in place* and returns the same params object, so both
``opt.step(params, grads)`` and ``params = opt.step(params, grads)`` work. The gradient
structure must match the params structure (as returned by :mod:`rfsnn.host.estimators`).
"""

from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("constant", "cosine", "step")


def _leaves(tree) -> list[np.ndarray]:
    if isinstance(tree, np.ndarray):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [leaf for sub in tree for leaf in _leaves(sub)]
    raise TypeError(f"expected nested lists/tuples of numpy arrays, got {type(tree).__name__}")


def _pairs(params, grads) -> list[tuple[np.ndarray, np.ndarray]]:
    ps, gs = _leaves(params), _leaves(grads)
    if len(ps) != len(gs) or any(p.shape != g.shape for p, g in zip(ps, gs)):
        raise ValueError("grads do not match params in structure or shape")
    for p in ps:
        if not np.issubdtype(p.dtype, np.floating):
            raise TypeError(f"params must be float arrays (updated in place); got {p.dtype}")
    return list(zip(ps, gs))


def _moments_state(opt, names: tuple[str, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON-able scalars, arrays) of an optimiser's step count and moment lists, for a checkpoint."""
    arrays = {}
    for name in names:
        for i, a in enumerate(getattr(opt, name) or []):
            arrays[f"{name.strip('_')}{i}"] = a
    return {"t": opt.t, "moments": {n: len(getattr(opt, n) or []) for n in names}}, arrays


def _load_moments(opt, names: tuple[str, ...], state: dict, arrays: dict[str, np.ndarray]) -> None:
    opt.t = int(state["t"])
    for name in names:
        n = state["moments"][name]
        setattr(opt, name, [np.array(arrays[f"{name.strip('_')}{i}"], np.float64) for i in range(n)] or None)


class SGD:
    """``v = momentum * v + g (+ weight_decay * p)``; ``p -= lr * v`` (PyTorch convention)."""

    def __init__(self, lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self._v: list[np.ndarray] | None = None
        self.t = 0

    def step(self, params, grads, lr: float | None = None):
        lr = self.lr if lr is None else float(lr)
        pairs = _pairs(params, grads)
        if self.momentum and self._v is None:
            self._v = [np.zeros_like(p) for p, _ in pairs]
        for i, (p, g) in enumerate(pairs):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                v = self._v[i]
                v *= self.momentum
                v += g
                g = v
            p -= lr * g
        self.t += 1
        return params

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return _moments_state(self, ("_v",))

    def load_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        _load_moments(self, ("_v",), state, arrays)


class Adam:
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is decoupled (AdamW) if set."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.lr = float(lr)
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None
        self.t = 0

    def step(self, params, grads, lr: float | None = None):
        lr = self.lr if lr is None else float(lr)
        pairs = _pairs(params, grads)
        if self._m is None:
            self._m = [np.zeros_like(p) for p, _ in pairs]
            self._v = [np.zeros_like(p) for p, _ in pairs]
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for (p, g), m, v in zip(pairs, self._m, self._v):
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            if self.weight_decay:
                p -= lr * self.weight_decay * p
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
        return params

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return _moments_state(self, ("_m", "_v"))

    def load_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        _load_moments(self, ("_m", "_v"), state, arrays)


def lr_at(step: int, total: int, base: float, schedule: str = "constant",
          floor_frac: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based) of ``total``.

    * ``"constant"``: ``base``.
    * ``"cosine"``: half-cosine from ``base`` at step 0 to ``floor_frac * base`` at ``step = total``
      (and after).
    * ``"step"``: ``base``, then ``x0.1`` at 50 % and again at 75 % of ``total``, never below
      ``floor_frac * base``.
    """
    if total <= 0:
        raise ValueError(f"total must be > 0; got {total}")
    if not 0.0 <= floor_frac <= 1.0:
        raise ValueError(f"floor_frac must be in [0, 1]; got {floor_frac}")
    base = float(base)
    frac = min(max(step / total, 0.0), 1.0)
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * (floor_frac + (1.0 - floor_frac) * 0.5 * (1.0 + math.cos(math.pi * frac)))
    if schedule == "step":
        drops = (frac >= 0.5) + (frac >= 0.75)
        return base * max(0.1 ** drops, floor_frac)
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
