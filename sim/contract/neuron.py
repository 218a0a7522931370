"""The LIF neuron of the contract (docs/fixed-point.md section 2), element-wise, and the first hidden
layer's spike trains as a table of its constant input current.

The golden model runs its first hidden layer from `first_layer_trains` / `first_layer_counts`, and the
gateware builds its spike-count ROM from `first_layer_counts` (rtl/learner/counts.py): both read the
same table, which `tests/test_golden.py` checks against the literal time loop.
"""
from __future__ import annotations

import numpy as np

from .config import DeviceConfig


def lif_update(u: np.ndarray, cur: np.ndarray, cfg: DeviceConfig) -> tuple[np.ndarray, np.ndarray]:
    """One neuron time step on int64 arrays: leak, integrate, compare, reset by subtraction.

    The element-wise statement of docs/fixed-point.md section 2, steps 2-4, for checking gateware
    lane by lane; the batched forward pass below computes the same thing in place.
    """
    u, cur = np.asarray(u, np.int64), np.asarray(cur, np.int64)
    v = np.clip(u - (u >> cfg.leak_shift) + cur, *cfg.u_range)
    spike = v >= cfg.threshold_q
    return v - cfg.threshold_q * spike, spike


def first_layer_trains(cfg: DeviceConfig) -> np.ndarray:
    """Spike trains of a first-layer neuron, (T, theta + 1) booleans: row t, column I says whether a
    neuron driven by the constant current I spikes at time step t (docs/fixed-point.md, section 2).

    The first hidden layer is direct-coded, so its current is constant over the T steps and its spike
    train is a function of that current alone. Only 0 < I < theta needs the table, made here by the
    element-wise LIF step itself: I <= 0 never fires (U stays <= 0) and I >= theta fires at every step
    (U stays >= 0 after each reset), so a current clamped to [0, theta] indexes it exactly.
    """
    current = np.arange(cfg.threshold_q + 1, dtype=np.int64)
    u = np.zeros_like(current)
    trains = np.empty((cfg.t_steps, current.size), bool)
    for t in range(cfg.t_steps):
        u, trains[t] = lif_update(u, current, cfg)
    return trains


def first_layer_counts(cfg: DeviceConfig) -> np.ndarray:
    """Spikes over the T steps of a first-layer neuron driven by the constant current I, for I = 0 .. theta
    (the column sums of first_layer_trains). A current below 0 counts 0 and one above theta counts T."""
    return first_layer_trains(cfg).sum(axis=0, dtype=np.int64)
