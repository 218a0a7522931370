"""Regression tasks with exact or reference solutions.

The three tasks are the function-regression and PDE-solution benchmarks of
Wan, Zhang & Karniadakis (arXiv:2411.07057): a 2-D Mexican-hat function, the
solution of a 1-D Poisson problem and the solution of a 1-D nonlinear
reaction-diffusion equation.  Each task is a :class:`Problem`: a box domain, a
function giving the target value at any point of that box, a sampler for
training points and a fixed evaluation grid, so that every training run is
scored on the same points.

Problems are built by name through :func:`get_problem`; ``problem.spec()``
records name and options so a run folder can rebuild the same task.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from rfsnn.sim.contract.fixed import format_number

__all__ = [
    "BOX_TOLERANCE",
    "PROBLEMS",
    "POISSON_SOLUTIONS",
    "Problem",
    "RD_DIFFUSION",
    "RD_REACTION",
    "RD_GRID",
    "check_points",
    "format_number",
    "interpolate_grid",
    "get_problem",
    "mexican_hat",
    "poisson1d",
    "rd_source",
    "reaction_diffusion",
    "solve_reaction_diffusion",
]

#: Points this far outside a box still count as inside (and are clipped onto it):
#: affine round trips through the device's input scaling move corners by ~1 ulp.
BOX_TOLERANCE = 1e-12


# --------------------------------------------------------------------------- #
# Shared point checking (also used by rfsnn.host.dataset.validate_points)
# --------------------------------------------------------------------------- #


def check_points(
    points: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    coord_names: tuple[str, ...] | None = None,
    what: str = "input",
    tol: float = BOX_TOLERANCE,
) -> np.ndarray:
    """Refuse malformed, non-finite or out-of-box points, naming the first culprit.

    Returns the points as float64 clipped onto the box, so that points within
    ``tol`` of a face land exactly on it.  A bad training point found deep in a
    run is expensive to trace, hence the sample index, column and value in the
    message.
    """
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    dim = lower.shape[0]
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} points must have shape (N, {dim}), got shape {x.shape}")
    finite = np.isfinite(x)
    bad = ~finite | (x < lower - tol) | (x > upper + tol)
    if bad.any():
        i, j = divmod(int(np.argmax(bad.ravel())), dim)
        col = f"column {j}" if coord_names is None else f"column {j} ({coord_names[j]})"
        where = f"{what} sample {i}, {col}: value {format_number(x[i, j])}"
        if not finite[i, j]:
            raise ValueError(f"{where} is not a finite number")
        raise ValueError(
            f"{where} is outside the allowed interval "
            f"[{format_number(lower[j])}, {format_number(upper[j])}]"
        )
    return np.clip(x, lower, upper)


# --------------------------------------------------------------------------- #
# Problem
# --------------------------------------------------------------------------- #


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Problem:
    """One regression task: a box, a target function on it, and an evaluation grid.

    ``solution`` maps validated (N, dim) points to (N,) target values; call
    :meth:`reference` rather than ``solution`` so shapes and finiteness are
    checked.  ``source`` is the PDE right-hand side f where the task is a PDE
    (poisson1d: f(x); reaction-diffusion: f(x) taking the x column only), for
    residual checks and physics-informed losses.
    """

    name: str
    dim: int
    lower: np.ndarray
    upper: np.ndarray
    coord_names: tuple[str, ...]
    solution: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    grid_points: tuple[int, ...]
    options: Mapping[str, object] = field(default_factory=dict)
    source: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    description: str = ""
    #: Whether ``solution`` is only defined inside the box (interpolated references).
    box_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "lower", _frozen(self.lower))
        object.__setattr__(self, "upper", _frozen(self.upper))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        shapes = {self.lower.shape, self.upper.shape, (self.dim,)}
        dims = {len(self.coord_names), len(self.grid_points), self.dim}
        if len(shapes) != 1 or dims != {self.dim}:
            raise ValueError(f"problem {self.name!r}: inconsistent dimensions")
        if not np.all(self.upper > self.lower):
            raise ValueError(f"problem {self.name!r}: empty box {self.lower}..{self.upper}")

    def reference(self, points: np.ndarray) -> np.ndarray:
        """Exact (or reference-solver) target at (N, dim) points, shape (N,)."""
        if self.box_only:
            lo, hi = self.lower, self.upper
        else:  # analytic: defined everywhere, but NaN in means a bug upstream
            lo, hi = np.full(self.dim, -np.inf), np.full(self.dim, np.inf)
        x = check_points(points, lo, hi, self.coord_names, what="reference")
        return np.asarray(self.solution(x), dtype=np.float64).reshape(x.shape[0])

    def sample_train(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points drawn uniformly from the box, shape (n, dim)."""
        if n < 0:
            raise ValueError(f"number of samples must be >= 0, got {n}")
        return rng.uniform(self.lower, self.upper, size=(n, self.dim))

    def grid_axes(self) -> tuple[np.ndarray, ...]:
        """The 1-D coordinate vectors of :meth:`test_grid`, each including both ends."""
        return tuple(
            np.linspace(lo, hi, n) for lo, hi, n in zip(self.lower, self.upper, self.grid_points)
        )

    def test_grid(self) -> np.ndarray:
        """Fixed tensor evaluation grid including the boundary, shape (prod(grid_shape), dim).

        Row-major with the first coordinate varying slowest, so
        ``values.reshape(grid_shape())[i, j]`` is the value at
        (axes[0][i], axes[1][j]); for an image with x horizontal use
        ``imshow(v.reshape(shape).T, origin="lower")``.
        """
        mesh = np.meshgrid(*self.grid_axes(), indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def grid_shape(self) -> tuple[int, ...]:
        return tuple(self.grid_points)

    def spec(self) -> dict:
        """JSON-serialisable name and options; ``get_problem(**spec)`` rebuilds the task."""
        return {"name": self.name, **dict(self.options)}


# --------------------------------------------------------------------------- #
# Mexican hat
# --------------------------------------------------------------------------- #


def mexican_hat(s: float = 0.5) -> Problem:
    """u = (1 - r^2/s^2) exp(-r^2 / (2 s^2)) on [-1, 1]^2: u(0) = 1, zero ring at r = s."""
    s = float(s)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"mexican-hat width s must be a positive finite number, got {s}")

    def u(p: np.ndarray) -> np.ndarray:
        q = (p[:, 0] ** 2 + p[:, 1] ** 2) / (s * s)
        return (1.0 - q) * np.exp(-0.5 * q)

    return Problem(
        name="mexican-hat",
        dim=2,
        lower=[-1.0, -1.0],
        upper=[1.0, 1.0],
        coord_names=("x", "y"),
        solution=u,
        grid_points=(64, 64),
        options={"s": s},
        description=f"u = (1 - r^2/s^2) exp(-r^2/(2 s^2)), s = {s}",
    )


# --------------------------------------------------------------------------- #
# Poisson 1-D: -u'' = f on [0, 1], u(0) = u(1) = 0
# --------------------------------------------------------------------------- #

_PI = math.pi
_SKEW_A = 5.0
# Peak of x(1-x)exp(a x) is at the root of a x^2 + (2 - a) x - 1 = 0 in (0, 1).
_SKEW_XMAX = ((_SKEW_A - 2.0) + math.sqrt(_SKEW_A**2 + 4.0)) / (2.0 * _SKEW_A)
_SKEW_C = 1.0 / (_SKEW_XMAX * (1.0 - _SKEW_XMAX) * math.exp(_SKEW_A * _SKEW_XMAX))


def _skew_u(x):
    return _SKEW_C * x * (1.0 - x) * np.exp(_SKEW_A * x)


def _skew_f(x):
    a = _SKEW_A
    return -_SKEW_C * np.exp(a * x) * (-2.0 + 2.0 * a * (1.0 - 2.0 * x) + a * a * x * (1.0 - x))


#: name -> (u, f, description); every u vanishes at 0 and 1 and -u'' = f.
POISSON_SOLUTIONS: Mapping[str, tuple[Callable, Callable, str]] = MappingProxyType(
    {
        "default": (
            lambda x: np.sin(_PI * x) + 0.3 * np.sin(4 * _PI * x),
            lambda x: _PI**2 * np.sin(_PI * x) + 4.8 * _PI**2 * np.sin(4 * _PI * x),
            "u = sin(pi x) + 0.3 sin(4 pi x)",
        ),
        "poly": (
            lambda x: 4.0 * x * (1.0 - x),
            lambda x: np.full_like(x, 8.0),
            "u = 4 x (1 - x), f = 8 (peak 1)",
        ),
        "sin3": (
            lambda x: np.sin(3 * _PI * x),
            lambda x: 9 * _PI**2 * np.sin(3 * _PI * x),
            "u = sin(3 pi x)",
        ),
        "skewed": (
            _skew_u,
            _skew_f,
            f"u = c x (1 - x) exp({_SKEW_A:g} x), c so that max u = 1 (steep drop near x = 1)",
        ),
    }
)


def poisson1d(solution: str = "default") -> Problem:
    """Solution of -u'' = f on [0, 1] with u(0) = u(1) = 0, for one of several analytic f."""
    if solution not in POISSON_SOLUTIONS:
        raise ValueError(
            f"unknown poisson1d solution {solution!r}; valid: {', '.join(POISSON_SOLUTIONS)}"
        )
    u, f, text = POISSON_SOLUTIONS[solution]
    return Problem(
        name="poisson1d",
        dim=1,
        lower=[0.0],
        upper=[1.0],
        coord_names=("x",),
        solution=lambda p: u(p[:, 0]),
        grid_points=(256,),
        options={"solution": solution},
        source=lambda x: f(np.asarray(x, dtype=np.float64)),
        description=f"-u'' = f, u(0) = u(1) = 0; {text}",
    )


# --------------------------------------------------------------------------- #
# Reaction-diffusion: u_t = D u_xx + k u^2 + f(x), u(x,0) = 0, u(0,t) = u(1,t) = 0
# --------------------------------------------------------------------------- #

RD_DIFFUSION = 0.01
RD_REACTION = 0.01
#: (nx, nt) intervals of the cached reference solve.  Spatial error dominates
#: (time error is ~100x smaller at equal steps), hence the finer x grid; the
#: estimated max error is ~1.2e-6 of max|u| and the solve takes ~0.25 s.
RD_GRID = (2048, 512)


def rd_source(x: np.ndarray) -> np.ndarray:
    """Forcing f(x) = sin(2 pi x) + 0.5 sin(6 pi x)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sin(2 * _PI * x) + 0.5 * np.sin(6 * _PI * x)


def _dst1(v: np.ndarray) -> np.ndarray:
    """Type-I discrete sine transform, V_k = sum_j v_j sin(pi j k / n), via an odd FFT extension."""
    m = v.shape[-1]
    n = m + 1
    ext = np.zeros(2 * n)
    ext[1:n] = v
    ext[n + 1 :] = -v[::-1]
    return -0.5 * np.fft.rfft(ext).imag[1:n]


def solve_reaction_diffusion(
    nx: int, nt: int, *, theta: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite-difference solution of the reaction-diffusion task on a uniform (x, t) grid.

    Scheme: second-order central differences in x; the theta-method in time
    (theta = 0.5 is Crank-Nicolson, second order; theta = 1 is backward Euler,
    kept only so tests can show that the convergence check detects a
    first-order scheme), with the reaction term averaged the same way:

        (u+ - u)/dt = D L (theta u+ + (1-theta) u) + k (theta u+^2 + (1-theta) u^2) + f.

    The linear operator I - theta dt D L is inverted exactly in the sine basis
    (the discrete Dirichlet Laplacian's eigenvectors), so each step is a few
    FFTs instead of a banded factorisation that numpy lacks.  The implicit
    u+^2 is resolved by fixed-point iteration from a linear-extrapolation
    predictor; the contraction factor is about theta dt k max|u| (~1e-5), so it
    converges to round-off in 2-3 sweeps, with the same fixed point a Newton
    solve would reach.

    Returns x (nx+1,), t (nt+1,) and u (nx+1, nt+1) with u[i, n] = u(x_i, t_n).
    """
    if nx < 4 or nt < 1:
        raise ValueError(f"need nx >= 4 and nt >= 1, got nx={nx}, nt={nt}")
    if not 0.5 <= theta <= 1.0:
        raise ValueError(f"theta must be in [0.5, 1] for stability, got {theta}")
    D, k = RD_DIFFUSION, RD_REACTION
    h, dt = 1.0 / nx, 1.0 / nt
    x = np.linspace(0.0, 1.0, nx + 1)
    t = np.linspace(0.0, 1.0, nt + 1)
    xi = x[1:-1]
    lam = -(4.0 / h**2) * np.sin(np.arange(1, nx) * _PI / (2 * nx)) ** 2
    a_impl = 1.0 - theta * dt * D * lam
    a_expl = 1.0 + (1.0 - theta) * dt * D * lam
    inv_scale = 2.0 / nx  # inverse DST-I is (2/n) DST-I
    f_int = rd_source(xi)
    f_hat = _dst1(f_int)
    c_new = dt * theta * k / a_impl

    out = np.zeros((nt + 1, nx + 1))  # rows written per step, transposed at the end
    u = np.zeros(nx - 1)
    u_hat = np.zeros(nx - 1)
    u_prev = None
    for n in range(nt):
        base = (a_expl * u_hat + dt * f_hat + (dt * (1.0 - theta) * k) * _dst1(u * u)) / a_impl
        guess = u + dt * f_int if u_prev is None else 2.0 * u - u_prev
        for _ in range(50):
            new_hat = base + c_new * _dst1(guess * guess)
            new = inv_scale * _dst1(new_hat)
            change = np.max(np.abs(new - guess))
            guess = new
            if change <= 1e-14 * (1.0 + np.max(np.abs(new))):
                break
        else:  # pragma: no cover - only for absurd step sizes
            raise RuntimeError(f"reaction-diffusion step {n} did not converge (nx={nx}, nt={nt})")
        u_prev, u, u_hat = u, new, new_hat
        out[n + 1, 1:-1] = u
    return x, t, np.ascontiguousarray(out.T)


def _lagrange4(s: np.ndarray) -> np.ndarray:
    """Cubic Lagrange weights for nodes 0..3 at local coordinate s, shape (N, 4)."""
    s0, s1, s2, s3 = s, s - 1.0, s - 2.0, s - 3.0
    return np.stack(
        [-s1 * s2 * s3 / 6.0, s0 * s2 * s3 / 2.0, -s0 * s1 * s3 / 2.0, s0 * s1 * s2 / 6.0],
        axis=1,
    )


def _stencil(p: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First node of the 4-point stencil around p (units of the grid step) and its weights."""
    i = np.clip(np.floor(p).astype(np.int64) - 1, 0, n - 3)
    return i, _lagrange4(p - i)


def interpolate_grid(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Tensor cubic Lagrange interpolation of values[i, j] on uniform [0, 1]^2 nodes.

    Points must lie in [0, 1]^2 (outside, the edge cubic is silently extrapolated).

    Fourth-order accurate (error ~ h^4 u'''' / 24, far below the solver's h^2
    error) and exact for cubics; stencils shift inwards at the edges, so no
    extrapolation and no boundary conditions are needed.
    """
    nx, nt = values.shape[0] - 1, values.shape[1] - 1
    ix, wx = _stencil(points[:, 0] * nx, nx)
    it, wt = _stencil(points[:, 1] * nt, nt)
    offs = np.arange(4)
    block = values[(ix[:, None] + offs)[:, :, None], (it[:, None] + offs)[:, None, :]]
    return np.einsum("na,nab,nb->n", wx, block, wt)


@functools.lru_cache(maxsize=1)
def _rd_reference_values() -> np.ndarray:
    _, _, u = solve_reaction_diffusion(*RD_GRID)
    u.setflags(write=False)
    return u


def reaction_diffusion() -> Problem:
    """u(x, t) of u_t = 0.01 u_xx + 0.01 u^2 + f(x) on [0, 1]^2, zero initial and boundary values.

    Targets come from :func:`solve_reaction_diffusion` on the ``RD_GRID`` grid
    (solved once per process) and cubic interpolation between its nodes.
    """

    def u(p: np.ndarray) -> np.ndarray:
        return interpolate_grid(_rd_reference_values(), p)

    return Problem(
        name="reaction-diffusion",
        dim=2,
        lower=[0.0, 0.0],
        upper=[1.0, 1.0],
        coord_names=("x", "t"),
        solution=u,
        grid_points=(64, 64),
        options={},
        source=rd_source,
        description=(
            "u_t = 0.01 u_xx + 0.01 u^2 + sin(2 pi x) + 0.5 sin(6 pi x), "
            "u = 0 at t = 0, x = 0 and x = 1"
        ),
        box_only=True,
    )


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

PROBLEMS: Mapping[str, Callable[..., Problem]] = MappingProxyType(
    {
        "mexican-hat": mexican_hat,
        "poisson1d": poisson1d,
        "reaction-diffusion": reaction_diffusion,
    }
)


def get_problem(name: str, **options) -> Problem:
    """Build a task by registry name; unknown names and options are refused with the valid ones."""
    try:
        factory = PROBLEMS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown problem {name!r}; valid names: {', '.join(PROBLEMS)}"
        ) from None
    allowed = list(inspect.signature(factory).parameters)
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise ValueError(
            f"problem {name!r} does not take option(s) {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(allowed) if allowed else '(none)'}"
        )
    return factory(**options)
