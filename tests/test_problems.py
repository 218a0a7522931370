"""Tasks: exact solutions satisfy their equations, the reaction-diffusion reference is accurate."""

import time

import numpy as np
import pytest

from rfsnn.host.problems import (
    POISSON_SOLUTIONS,
    PROBLEMS,
    RD_DIFFUSION,
    RD_GRID,
    RD_REACTION,
    get_problem,
    interpolate_grid,
    rd_source,
    solve_reaction_diffusion,
)

pytestmark = pytest.mark.xdist_group("problems")  # its module fixture is computed once

# --------------------------------------------------------------------------- registry, grids


def test_registry_and_bad_names():
    assert set(PROBLEMS) == {"mexican-hat", "poisson1d", "reaction-diffusion"}
    with pytest.raises(ValueError, match="valid names: mexican-hat, poisson1d, reaction-diffusion"):
        get_problem("mexican_hat")
    with pytest.raises(ValueError, match="does not take option.*'s'.*options: solution"):
        get_problem("poisson1d", s=0.3)
    with pytest.raises(ValueError, match="unknown poisson1d solution 'nope'; valid: default, poly"):
        get_problem("poisson1d", solution="nope")
    with pytest.raises(ValueError, match="positive"):
        get_problem("mexican-hat", s=0.0)


@pytest.mark.parametrize(
    "name, dim, coords, shape",
    [
        ("mexican-hat", 2, ("x", "y"), (64, 64)),
        ("poisson1d", 1, ("x",), (256,)),
        ("reaction-diffusion", 2, ("x", "t"), (64, 64)),
    ],
)
def test_shapes_grids_and_sampling(name, dim, coords, shape):
    p = get_problem(name)
    assert (p.name, p.dim, p.coord_names, p.grid_shape()) == (name, dim, coords, shape)
    assert p.lower.shape == p.upper.shape == (dim,)
    g = p.test_grid()
    assert g.shape == (int(np.prod(shape)), dim)
    # the grid includes every face of the box, and the first coordinate varies slowest
    for j in range(dim):
        assert g[:, j].min() == p.lower[j] and g[:, j].max() == p.upper[j]
    assert g[0].tolist() == p.lower.tolist() and g[-1].tolist() == p.upper.tolist()
    if dim == 2:
        grid = g.reshape(*shape, 2)
        axes = p.grid_axes()
        assert np.all(grid[:, 0, 0] == axes[0]) and np.all(grid[0, :, 1] == axes[1])
    v = p.reference(g)
    assert v.shape == (g.shape[0],) and np.all(np.isfinite(v))
    assert v.reshape(shape).shape == shape
    x = p.sample_train(500, np.random.default_rng(1))
    assert x.shape == (500, dim)
    assert np.all((x >= p.lower) & (x <= p.upper))
    assert np.array_equal(x, p.sample_train(500, np.random.default_rng(1)))
    assert get_problem(**p.spec()).spec() == p.spec()
    with pytest.raises(ValueError, match=rf"shape \(N, {dim}\)"):
        p.reference(np.zeros((3, dim + 1)))


# --------------------------------------------------------------------------- mexican hat


@pytest.mark.parametrize("s", [0.5, 0.3])
def test_mexican_hat_known_points(s):
    p = get_problem("mexican-hat", s=s)
    assert p.reference(np.array([[0.0, 0.0]]))[0] == 1.0
    ang = np.linspace(0, 2 * np.pi, 13)
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    np.testing.assert_allclose(p.reference(s * ring), 0.0, atol=1e-15)
    assert np.all(p.reference(0.9 * s * ring) > 0)
    assert np.all(p.reference(1.1 * s * ring) < 0)
    # minimum -2 exp(-3/2) on the ring r = sqrt(3) s
    np.testing.assert_allclose(p.reference(np.sqrt(3) * s * ring), -2 * np.exp(-1.5), rtol=1e-14)
    g = p.test_grid()
    assert p.reference(g).min() >= -2 * np.exp(-1.5) - 1e-15


# --------------------------------------------------------------------------- poisson


@pytest.mark.parametrize("solution", list(POISSON_SOLUTIONS))
def test_poisson_solutions_satisfy_equation(solution):
    p = get_problem("poisson1d", solution=solution)
    np.testing.assert_allclose(p.reference(np.array([[0.0], [1.0]])), 0.0, atol=1e-14)
    # fourth-order central difference for u'' on a fine grid: truncation ~ h^4 u^(6) / 90
    h = 1e-3
    x = np.linspace(2 * h, 1 - 2 * h, 997)

    def u(shift):
        return p.reference((x + shift)[:, None])

    uxx = (-u(2 * h) + 16 * u(h) - 30 * u(0) + 16 * u(-h) - u(-2 * h)) / (12 * h * h)
    f = p.source(x)
    assert np.max(np.abs(-uxx - f)) <= 1e-6 * np.max(np.abs(f))
    assert np.max(np.abs(p.reference(p.test_grid()))) > 0.5


def test_poisson_default_is_the_specified_function():
    p = get_problem("poisson1d")
    x = np.linspace(0, 1, 11)
    np.testing.assert_allclose(
        p.reference(x[:, None]), np.sin(np.pi * x) + 0.3 * np.sin(4 * np.pi * x), atol=1e-15
    )
    np.testing.assert_allclose(
        p.source(x),
        np.pi**2 * np.sin(np.pi * x) + 4.8 * np.pi**2 * np.sin(4 * np.pi * x),
        atol=1e-13,
    )


def test_poisson_peaks_are_normalised():
    for name in ("poly", "skewed"):
        p = get_problem("poisson1d", solution=name)
        x = np.linspace(0, 1, 200001)[:, None]
        assert abs(p.reference(x).max() - 1.0) < 1e-9


# --------------------------------------------------------------------------- reaction-diffusion

RD = get_problem("reaction-diffusion")


def test_rd_initial_and_boundary_values_are_zero():
    s = np.linspace(0, 1, 37)
    zeros = np.zeros_like(s)
    for pts in (np.c_[zeros, s], np.c_[zeros + 1, s], np.c_[s, zeros]):
        np.testing.assert_allclose(RD.reference(pts), 0.0, atol=1e-15)
    assert RD.reference(np.array([[0.25, 1.0]]))[0] > 0.5


def test_rd_refuses_points_outside_the_box():
    msg = r"sample 1, column 1 \(t\): value 1.5 is outside the allowed interval \[0, 1\]"
    with pytest.raises(ValueError, match=msg):
        RD.reference(np.array([[0.5, 0.5], [0.2, 1.5]]))
    with pytest.raises(ValueError, match=r"sample 0, column 0 \(x\): value nan is not a finite"):
        RD.reference(np.array([[np.nan, 0.5]]))
    # within the tolerance is fine, and lands on the face
    assert RD.reference(np.array([[1 + 1e-13, 0.5]]))[0] == 0.0


def test_rd_interpolated_solution_satisfies_pde():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0.05, 0.95, size=(2000, 2))
    d = 3e-3

    def u(dx, dt):
        return RD.reference(pts + np.array([dx, dt]))

    u0 = u(0, 0)
    uxx = (-u(2 * d, 0) + 16 * u(d, 0) - 30 * u0 + 16 * u(-d, 0) - u(-2 * d, 0)) / (12 * d * d)
    ut = (-u(0, 2 * d) + 8 * u(0, d) - 8 * u(0, -d) + u(0, -2 * d)) / (12 * d)
    f = rd_source(pts[:, 0])
    residual = ut - RD_DIFFUSION * uxx - RD_REACTION * u0**2 - f
    # measured ~4e-6; dropping the reaction term alone would leave ~5e-3
    assert np.max(np.abs(residual)) < 1e-4 * np.max(np.abs(f))
    assert np.max(np.abs(RD_REACTION * u0**2)) > 4e-3


@pytest.fixture(scope="module")
def rd_fine():
    return solve_reaction_diffusion(1024, 512)[2]


def _refinement_ratios(fine, theta):
    errors = []
    for n in (32, 64, 128):
        _, _, u = solve_reaction_diffusion(n, n, theta=theta)
        exact = fine[:: (fine.shape[0] - 1) // n, :: (fine.shape[1] - 1) // n]
        errors.append(np.max(np.abs(u - exact)))
    return [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]


def test_rd_solver_is_second_order(rd_fine):
    # nx = nt refined together against a (1024, 512) solve; measured 4.04, 4.02
    ratios = _refinement_ratios(rd_fine, theta=0.5)
    assert all(3.5 < r < 4.5 for r in ratios), ratios


def test_rd_convergence_check_rejects_a_first_order_scheme(rd_fine):
    # backward Euler in time: measured 2.61, 2.36, i.e. the bounds above would fail
    ratios = _refinement_ratios(rd_fine, theta=1.0)
    assert all(r < 3.0 for r in ratios), ratios


def test_rd_reference_error_is_well_below_1e_4():
    nx, nt = RD_GRID[0] // 2, RD_GRID[1] // 2
    x, t, coarse = solve_reaction_diffusion(nx, nt)
    nodes = np.stack([a.ravel() for a in np.meshgrid(x, t, indexing="ij")], axis=1)
    fine_at_nodes = RD.reference(nodes).reshape(coarse.shape)  # interpolation is exact at nodes
    scale = np.max(np.abs(fine_at_nodes))
    # second order: error(fine) ~ |coarse - fine| / 3; measured ~1.2e-6 relative
    est = np.max(np.abs(coarse - fine_at_nodes)) / 3 / scale
    assert est < 1e-5
    # between nodes the interpolant keeps that accuracy: interpolating the coarse
    # solve lands within the discretisation difference of the reference
    pts = np.random.default_rng(3).uniform(0, 1, size=(5000, 2))
    gap = np.max(np.abs(interpolate_grid(coarse, pts) - RD.reference(pts))) / scale
    assert gap < 3.5 * est + 1e-6


def test_interpolation_is_fourth_order():
    def g(x, t):
        return np.sin(6 * np.pi * x) * np.exp(-2 * t) + x * t**3

    pts = np.random.default_rng(4).uniform(0, 1, size=(4000, 2))
    errs = []
    for n in (64, 128, 256):
        xs = np.linspace(0, 1, n + 1)
        ts = np.linspace(0, 1, n // 2 + 1)
        vals = g(xs[:, None], ts[None, :])
        errs.append(np.max(np.abs(interpolate_grid(vals, pts) - g(pts[:, 0], pts[:, 1]))))
    # 4-point Lagrange is O(h^4): measured 6.7e-7 at n = 256, ratios 16.1, 15.9
    assert errs[-1] < 1e-6
    assert all(14 < errs[i] / errs[i + 1] < 18 for i in range(2)), errs
    # exact for cubics
    xs = np.linspace(0, 1, 9)
    ts = np.linspace(0, 1, 5)
    cubic = lambda x, t: 1 + x - 2 * x**3 + x**2 * t - t**3  # noqa: E731
    np.testing.assert_allclose(
        interpolate_grid(cubic(xs[:, None], ts[None, :]), pts),
        cubic(pts[:, 0], pts[:, 1]),
        atol=1e-13,
    )


def test_rd_solver_time_budget():
    t0 = time.perf_counter()
    solve_reaction_diffusion(*RD_GRID)
    assert time.perf_counter() - t0 < 2.0
