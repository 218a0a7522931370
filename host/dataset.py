"""Training data for a task, and its scaling into the device's range.

The device sees inputs and targets as signed fixed-point integers; every value crosses that boundary
through the contract's quantize (rfsnn.sim.contract.fixed), which refuses what it cannot represent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .problems import check_points

if TYPE_CHECKING:
    from .problems import Problem

__all__ = ["Dataset", "Scaler", "validate_points"]


def validate_points(x: np.ndarray, problem: Problem, what: str = "input") -> np.ndarray:
    """Refuse NaN/inf and points outside the problem's box (tolerance 1e-12).

    Returns float64 points clipped onto the box; the message names the first
    bad sample, its column (and coordinate name), value and allowed interval.
    """
    return check_points(x, problem.lower, problem.upper, problem.coord_names, what=what)


# --------------------------------------------------------------------------- #
# Scaling
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Scaler:
    """Affine map from the task box to [-1, 1]^dim and from targets to device units.

    Kept separate from the problem so a run folder can store exactly the map
    the device was trained with (``to_dict``) and convert its outputs back.
    """

    lower: np.ndarray
    upper: np.ndarray
    target_scale: float

    #: Default headroom: targets occupy at most 1/1.25 of the device's unit range.
    HEADROOM = 1.25

    def __post_init__(self) -> None:
        lower = np.array(self.lower, dtype=np.float64).reshape(-1)
        upper = np.array(self.upper, dtype=np.float64).reshape(-1)
        lower.setflags(write=False)
        upper.setflags(write=False)
        if lower.shape != upper.shape or not np.all(np.isfinite(lower) & np.isfinite(upper)):
            raise ValueError(
                f"scaler box must be two finite vectors of equal length, got {lower}, {upper}"
            )
        if not np.all(upper > lower):
            raise ValueError(f"scaler box is empty: lower {lower}, upper {upper}")
        scale = float(self.target_scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(
                f"target_scale must be a positive finite number, got {self.target_scale!r}"
            )
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "target_scale", scale)

    @classmethod
    def for_problem(cls, problem: Problem, target_scale: float | None = None) -> Scaler:
        """Scaler for a task; default target_scale is 1.25 * max|u| on the task's test grid."""
        if target_scale is None:
            peak = float(np.max(np.abs(problem.reference(problem.test_grid()))))
            if not (math.isfinite(peak) and peak > 0):
                raise ValueError(
                    f"cannot derive a target scale for {problem.name!r}: max|u| = {peak}"
                )
            target_scale = cls.HEADROOM * peak
        return cls(problem.lower, problem.upper, target_scale)

    @property
    def dim(self) -> int:
        return self.lower.shape[0]

    def _coords(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"points must have last axis of length {self.dim}, got shape {x.shape}"
            )
        return x

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """Task coordinates -> device inputs; the box corners map to exactly -1 and 1."""
        x = self._coords(x)
        return 2.0 * ((x - self.lower) / (self.upper - self.lower)) - 1.0

    def inputs_to_task(self, x_dev: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`inputs` (to within rounding)."""
        x_dev = self._coords(x_dev)
        return self.lower + (x_dev + 1.0) * (0.5 * (self.upper - self.lower))

    def targets(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u, dtype=np.float64) / self.target_scale

    def outputs_to_task(self, y_dev: np.ndarray) -> np.ndarray:
        """Device outputs -> task units (inverse of :meth:`targets`)."""
        return np.asarray(y_dev, dtype=np.float64) * self.target_scale

    def to_dict(self) -> dict:
        return {
            "lower": [float(v) for v in self.lower],
            "upper": [float(v) for v in self.upper],
            "target_scale": self.target_scale,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        missing = {"lower", "upper", "target_scale"} - set(d)
        if missing:
            raise ValueError(f"scaler record lacks {', '.join(sorted(missing))}")
        return cls(np.asarray(d["lower"]), np.asarray(d["upper"]), float(d["target_scale"]))


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training and test points of a task in task units, plus the scaler for the device.

    Points and targets stay in task units; scale with ``scaler`` and then
    the contract's quantize (rfsnn.sim.contract.fixed) at the device boundary.
    """

    problem: Problem
    scaler: Scaler
    x_train: np.ndarray  # (N, dim) task coordinates
    u_train: np.ndarray  # (N,)
    x_test: np.ndarray  # problem.test_grid()
    u_test: np.ndarray
    seed: int | None = None

    @classmethod
    def make(
        cls, problem: Problem, n_train: int, seed: int, target_scale: float | None = None
    ) -> Dataset:
        """Training points drawn uniformly from the box; reproducible from the seed."""
        if int(n_train) < 1:
            raise ValueError(f"n_train must be >= 1, got {n_train}")
        rng = np.random.default_rng(seed)
        x_train = problem.sample_train(int(n_train), rng)
        x_test = problem.test_grid()
        arrays = {
            "x_train": x_train,
            "u_train": problem.reference(x_train),
            "x_test": x_test,
            "u_test": problem.reference(x_test),
        }
        for name, a in arrays.items():
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{problem.name}: {name} contains non-finite values")
            a.setflags(write=False)
        return cls(
            problem=problem,
            scaler=Scaler.for_problem(problem, target_scale),
            seed=seed,
            **arrays,
        )

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def batches(
        self, batch: int, rng: np.random.Generator, drop_last: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless (x, u) minibatches in task units: a fresh permutation every epoch.

        Every training sample appears exactly once per epoch; the last batch of
        an epoch is short unless ``drop_last`` (for fixed-size device batches),
        which skips the remainder of that epoch's permutation instead.
        """
        n = self.n_train
        if batch < 1:
            raise ValueError(f"batch size must be >= 1, got {batch}")
        if drop_last and batch > n:
            raise ValueError(f"batch size {batch} exceeds the {n} training samples with drop_last")
        stop = n - n % batch if drop_last else n
        while True:
            perm = rng.permutation(n)
            for start in range(0, stop, batch):
                idx = perm[start : start + batch]
                yield self.x_train[idx], self.u_train[idx]


class BatchSampler:
    """Endless fixed-size minibatches of a training set (``Dataset.batches`` with ``drop_last``: a fresh
    permutation every epoch, the remainder skipped), drawn one at a time and resumable: ``state()``
    says where the sampler stands and ``restore`` puts a new sampler there, so a resumed run trains
    on the very batches the uninterrupted run would have. (The float references' batches; a device's
    follow the contract's batch stream, rfsnn.sim.contract.streams.)"""

    def __init__(self, x: np.ndarray, u: np.ndarray, batch: int, rng: np.random.Generator):
        n = len(x)
        if not 1 <= batch <= n:
            raise ValueError(f"batch size must be in 1..{n} (the training samples), got {batch}")
        self.x, self.u, self.batch, self.rng = x, u, batch, rng
        self._stop = n - n % batch
        self._epoch_rng: dict | None = None  # the generator's state when this epoch's permutation was drawn
        self._perm: np.ndarray | None = None
        self._pos = 0

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        if self._perm is None or self._pos + self.batch > self._stop:
            self._epoch_rng = self.rng.bit_generator.state
            self._perm, self._pos = self.rng.permutation(len(self.x)), 0
        idx = self._perm[self._pos:self._pos + self.batch]
        self._pos += self.batch
        return self.x[idx], self.u[idx]

    def state(self) -> dict:
        """JSON-able: the generator's state at the epoch's start and the position in its permutation."""
        return {"epoch_rng": self._epoch_rng, "pos": self._pos}

    def restore(self, state: dict) -> None:
        if state["epoch_rng"] is None:  # nothing drawn yet
            return
        self.rng.bit_generator.state = state["epoch_rng"]
        self._epoch_rng = self.rng.bit_generator.state
        self._perm, self._pos = self.rng.permutation(len(self.x)), int(state["pos"])
