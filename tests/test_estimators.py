"""Gradient estimators (BPTT, randomized forward-mode gradient, weight perturbation) and
optimisers on a tiny network.

Reference gradients: on ``spike="sigmoid"`` the network is smooth and its true derivative is
the surrogate, so central finite differences check BPTT; BPTT then checks forward mode
exactly on both networks; and the Monte-Carlo estimators are checked in expectation against
BPTT with tolerances derived from their variance.
"""

import numpy as np
import pytest

from rfsnn.host import estimators as est
from rfsnn.host import floatnet as fn
from rfsnn.host import optim

LAYERS = (2, 5, 4, 1)
B = 8
N_MC = 20_000  # directions for the expectation tests


def make(spike="sigmoid", detach_reset=False, seed=0):
    spec = fn.FloatNetSpec(LAYERS, T=6, spike=spike, detach_reset=detach_reset)
    rng = np.random.default_rng(seed)
    params = fn.init_params(spec, rng)
    x = rng.uniform(-1, 1, (B, LAYERS[0]))
    t = rng.uniform(-1, 1, (B, LAYERS[-1]))
    return spec, params, x, t


def flat_grad(spec, params, x, t):
    loss, g, n = est.bptt(spec, params, x, t)
    assert n == 1
    return loss, fn.flatten(g)


# ----------------------------------------------------------------------------- surrogate


def test_smooth_step_derivative_is_the_surrogate():
    """The smooth stand-in S must be the antiderivative of the surrogate (that is what makes
    finite differences on the sigmoid network a check of surrogate-gradient code), and a step
    from 0 to 1 through 1/2 at theta. Central FD with h = 1e-6: truncation h^2/6 max|S'''|
    = 1e-12 * 3 k^3 / 6 ~ 6e-11, rounding ~ eps / h ~ 1e-10, so 1e-9 can only fail on a
    real mismatch (a wrong constant factor is O(1))."""
    spec = fn.FloatNetSpec(LAYERS, spike="sigmoid", theta=0.7, slope=5.0)
    u = np.linspace(-3, 4, 2001)
    h = 1e-6
    fd = (fn.spike_fn(spec, u + h) - fn.spike_fn(spec, u - h)) / (2 * h)
    np.testing.assert_allclose(fd, fn.surrogate_grad(spec, u), rtol=0, atol=1e-9)
    assert fn.spike_fn(spec, np.array(0.7)) == 0.5
    assert fn.spike_fn(spec, np.array(-1e9)) == pytest.approx(0.0, abs=1e-9)
    assert fn.spike_fn(spec, np.array(1e9)) == pytest.approx(1.0, abs=1e-9)
    hs = fn.FloatNetSpec(LAYERS, spike="heaviside", theta=0.7)
    np.testing.assert_array_equal(fn.spike_fn(hs, np.array([0.7 - 1e-12, 0.7, 0.8])), [0, 1, 1])
    np.testing.assert_array_equal(fn.surrogate_grad(hs, u), fn.surrogate_grad(spec, u))


# ----------------------------------------------------------------------------- BPTT


@pytest.mark.parametrize("seed", [0, 1])
def test_bptt_matches_finite_differences_on_smooth_net(seed):
    """BPTT is the exact gradient of the smooth network: every coordinate against central FD
    with h = 1e-5 (truncation ~ h^2 = 1e-10, rounding ~ eps L / h ~ 1e-11, both relative)."""
    spec, params, x, t = make("sigmoid", seed=seed)
    loss, g = flat_grad(spec, params, x, t)
    assert loss == pytest.approx(fn.loss(spec, params, x, t), rel=1e-14)
    d = fn.n_params(spec)
    fd = est.directional_derivative_fd(spec, params, x, t, np.eye(d), h=1e-5)
    assert np.linalg.norm(fd - g) / np.linalg.norm(g) < 1e-6
    # every layer gets a non-trivial gradient (the test would be vacuous otherwise)
    for sl in fn.layer_slices(spec):
        assert np.linalg.norm(g[sl]) > 1e-3 * np.linalg.norm(g)


def test_bptt_readout_gradient_exact_on_heaviside_net():
    """The loss is exactly quadratic in the readout (W_L, b_L), spikes do not depend on it, so
    FD is exact there even for the Heaviside network."""
    spec, params, x, t = make("heaviside")
    _, g = flat_grad(spec, params, x, t)
    sl = fn.layer_slices(spec)[-1]
    E = np.eye(fn.n_params(spec))[sl]
    fd = est.directional_derivative_fd(spec, params, x, t, E, h=1e-3)
    np.testing.assert_allclose(fd, g[sl], rtol=0, atol=1e-11)


# ----------------------------------------------------------------------------- forward mode


@pytest.mark.parametrize("spike", ["heaviside", "sigmoid"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("mode", ["global", "layerwise"])
def test_forward_mode_directional_derivative_equals_bptt(spike, detach_reset, mode):
    """Forward mode and reverse mode of the same surrogate computation agree to rounding for
    fixed directions; the RFG estimate is then exactly sum_m w_m (g . v_m) v_m."""
    spec, params, x, t = make(spike, detach_reset)
    _, g = flat_grad(spec, params, x, t)
    V, w = est.sample_directions(spec, np.random.default_rng(5), 9, "gaussian", mode)
    loss, grads, n, c = est.rfg_with_directions(spec, params, x, t, V, w)
    assert n == 9 and loss == pytest.approx(fn.loss(spec, params, x, t), rel=1e-14)
    scale = np.linalg.norm(g) * np.linalg.norm(V, axis=1)
    np.testing.assert_allclose(c, V @ g, rtol=0, atol=1e-10 * scale.max())
    assert np.all(np.abs(V @ g) > 1e-6 * scale)  # directions are not accidentally orthogonal
    np.testing.assert_allclose(fn.flatten(grads), (w * (V @ g)) @ V, rtol=1e-9, atol=1e-14)


def test_layerwise_directions_touch_one_layer_each():
    """Layer-wise: direction k is supported on layer k mod L only, weights 1/K_l."""
    spec = make()[0]
    L = spec.n_weight_layers
    V, w = est.sample_directions(spec, np.random.default_rng(0), 7, "rademacher", "layerwise")
    sl = fn.layer_slices(spec)
    for k in range(7):
        l = k % L
        assert np.all(V[k, sl[l]] != 0)
        assert np.all(np.delete(V[k], np.r_[sl[l]]) == 0)
        assert w[k] == pytest.approx(1.0 / len(range(l, 7, L)))


@pytest.mark.parametrize("mode,n_expected", [("global", 6), ("layerwise", 6 * 3)])
def test_rfg_is_deterministic_and_counts_passes(mode, n_expected):
    """rfg = rfg_with_directions on the directions drawn from the same rng state."""
    spec, params, x, t = make("heaviside")
    l1, g1, n1 = est.rfg(spec, params, x, t, np.random.default_rng(9), directions=6, mode=mode)
    l2, g2, n2 = est.rfg(spec, params, x, t, np.random.default_rng(9), directions=6, mode=mode)
    assert n1 == n2 == n_expected and l1 == l2
    np.testing.assert_array_equal(fn.flatten(g1), fn.flatten(g2))
    K = 6 * (spec.n_weight_layers if mode == "layerwise" else 1)
    V, w = est.sample_directions(spec, np.random.default_rng(9), K, "gaussian", mode)
    _, g3, _, _ = est.rfg_with_directions(spec, params, x, t, V, w)
    np.testing.assert_array_equal(fn.flatten(g1), fn.flatten(g3))
    assert [a.shape for pair in g1 for a in pair] == [a.shape for pair in params for a in pair]


# ----------------------------------------------------------------------------- directions


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_rank1_directions_are_outer_products_with_identity_covariance(noise):
    """Each layer block of a rank-1 direction is a b^T over [W | b]; E[v v^T] = I.
    Entries of the sample second moment over N draws have std sqrt(Var(v_i v_j) / N), with
    Var(v_i v_j) <= E[a^4] E[b^4] - 1 = 8 (Gaussian) or 1 (Rademacher); 6 std over ~d^2/2
    entries is a bound that holds, while a missing/misplaced factor is an O(1) error."""
    spec = make()[0]
    N = N_MC
    V, _ = est.sample_directions(spec, np.random.default_rng(1), N, noise, "global", "rank1")
    for l, sl in enumerate(fn.layer_slices(spec)):
        o, i = spec.layers[l + 1], spec.layers[l]
        blk = V[:3, sl]
        aug = np.concatenate([blk[:, :o * i].reshape(3, o, i), blk[:, o * i:, None]], axis=2)
        for m in aug:
            assert np.linalg.matrix_rank(m) == 1
        if noise == "rademacher":
            assert np.all(np.abs(V[:, sl]) == 1)
    C = V.T @ V / N
    var = 8.0 if noise == "gaussian" else 1.0
    assert np.max(np.abs(C - np.eye(V.shape[1]))) < 6 * np.sqrt(var / N)


# ----------------------------------------------------------------------------- expectations

# Variance-derived tolerance. For one direction the estimate is g_k = c_k v_k with
# E[g_k] = grad (E[v v^T] = I). The mean of N independent directions has
#     E||g_hat - grad||^2 = (E||g_k||^2 - ||grad||^2) / N  <=  E||g_k||^2 / N,
# e.g. (d + 1) ||grad||^2 / N for Gaussian and (d - 1) ||grad||^2 / N for Rademacher full
# directions, so the relative error of the mean scales like sqrt(d / N) (~0.047 here for
# d = 44, N = 20k). Layer-wise, each layer's mean uses N_l directions:
#     E||g_hat - grad||^2 <= sum_m w_m^2 E||c_m v_m||^2.
# We estimate that bound from the same samples (unbiased) and require the error to be below
# twice its square root: ||g_hat - grad||^2 is a sum of ~d squared, nearly Gaussian (CLT over
# N) components, so exceeding 4x its mean is vanishingly unlikely, while a biased estimator
# (wrong scale, wrong layout, wrong sign) gives an O(1) relative error.


def _check_mc(g_true, V, w, c):
    g_hat = (w * c) @ V
    bound = np.sqrt(np.sum((w * c) ** 2 * np.sum(V ** 2, axis=1)))
    gn = np.linalg.norm(g_true)
    rel = np.linalg.norm(g_hat - g_true) / gn
    cos = g_hat @ g_true / (np.linalg.norm(g_hat) * gn)
    assert bound / gn < 0.15, "too few directions for a meaningful test"
    assert rel < 2 * bound / gn, (rel, bound / gn)
    assert cos > 0.99, cos


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
@pytest.mark.parametrize("mode", ["global", "layerwise"])
@pytest.mark.parametrize("spike", ["heaviside", "sigmoid"])
def test_rfg_expectation_is_bptt_gradient(noise, mode, spike):
    """mean_k (g . v_k) v_k over many directions approaches the (surrogate) gradient."""
    spec, params, x, t = make(spike)
    _, g = flat_grad(spec, params, x, t)
    V, w = est.sample_directions(spec, np.random.default_rng(11), N_MC, noise, mode)
    _, _, _, c = est.rfg_with_directions(spec, params, x, t, V, w)
    _check_mc(g, V, w, c)


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
@pytest.mark.parametrize("difference", ["central", "forward"])
@pytest.mark.parametrize("structure", ["full", "rank1"])
@pytest.mark.parametrize("mode", ["global", "layerwise"])
def test_wp_expectation_is_gradient_on_smooth_net(noise, difference, structure, mode):
    """WP estimates the gradient of the sigma-smoothed loss; with sigma = 1e-4 on the smooth
    network that differs from the true gradient by O(sigma^2) (the O(sigma) term of forward
    differences, sigma/2 E[(v^T H v) v], vanishes for symmetric noise), far below the MC
    tolerance."""
    spec, params, x, t = make("sigmoid")
    _, g = flat_grad(spec, params, x, t)
    V, w = est.sample_directions(spec, np.random.default_rng(12), N_MC, noise, mode, structure)
    _, _, n, c = est.wp_with_directions(spec, params, x, t, V, w, 1e-4, difference)
    assert n == (2 * N_MC if difference == "central" else N_MC + 1)
    _check_mc(g, V, w, c)


# ----------------------------------------------------------------------------- WP, sharp


@pytest.mark.parametrize("structure", ["full", "rank1"])
def test_wp_coefficients_are_directional_derivatives_on_smooth_net(structure):
    """For fixed directions, the central WP slope equals g . v up to O(sigma^2): with
    sigma = 1e-5 truncation ~1e-10 and rounding ~eps/sigma ~1e-11 (relative)."""
    spec, params, x, t = make("sigmoid")
    _, g = flat_grad(spec, params, x, t)
    for mode in ("global", "layerwise"):
        V, w = est.sample_directions(spec, np.random.default_rng(3), 9, "rademacher", mode, structure)
        _, grads, _, c = est.wp_with_directions(spec, params, x, t, V, w, 1e-5, "central")
        scale = np.linalg.norm(g) * np.linalg.norm(V, axis=1)
        np.testing.assert_allclose(c, V @ g, rtol=0, atol=1e-7 * scale.max())
        np.testing.assert_allclose(fn.flatten(grads), (w * c) @ V, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
@pytest.mark.parametrize("structure", ["full", "rank1"])
def test_wp_on_readout_is_exact_for_quadratic_loss(noise, structure):
    """The loss is exactly quadratic in the readout layer even on the Heaviside network, so
    with large sigma the central slope is exactly g . v and the forward slope is exactly
    g . v + (sigma / B) sum (r dW^T + db)^2 (the Hessian term)."""
    spec, params, x, t = make("heaviside")
    _, g = flat_grad(spec, params, x, t)
    L = spec.n_weight_layers
    V, w = est.sample_directions(spec, np.random.default_rng(4), 4 * L, noise, "layerwise", structure)
    V = V[L - 1::L]  # the directions that touch the readout
    w = np.full(len(V), 1.0 / len(V))
    sigma = 0.5
    _, _, _, cc = est.wp_with_directions(spec, params, x, t, V, w, sigma, "central")
    _, _, _, cf = est.wp_with_directions(spec, params, x, t, V, w, sigma, "forward")
    np.testing.assert_allclose(cc, V @ g, rtol=0, atol=1e-12)
    r = fn.simulate_hidden(spec, params[:-1], x)[-1]
    dW, db = fn.unflatten(spec, V)[-1]
    dy = np.matmul(r, np.swapaxes(dW, -1, -2)) + db[:, None, :]
    np.testing.assert_allclose(cf, V @ g + sigma / B * np.sum(dy ** 2, axis=(1, 2)), rtol=0, atol=1e-12)


def test_wp_public_interface():
    """wp draws its directions like sample_directions, is deterministic given the rng, counts
    passes (central 2K, forward K+1) and returns L(w) for forward differences."""
    spec, params, x, t = make("heaviside")
    for difference, n_exp in (("central", 16), ("forward", 9)):
        kw = dict(directions=8, sigma=0.05, noise="rademacher", difference=difference,
                  mode="layerwise", structure="rank1")
        l1, g1, n1 = est.wp(spec, params, x, t, np.random.default_rng(2), **kw)
        l2, g2, n2 = est.wp(spec, params, x, t, np.random.default_rng(2), **kw)
        assert n1 == n2 == n_exp and l1 == l2
        np.testing.assert_array_equal(fn.flatten(g1), fn.flatten(g2))
        V, w = est.sample_directions(spec, np.random.default_rng(2), 8, "rademacher", "layerwise", "rank1")
        _, g3, _, _ = est.wp_with_directions(spec, params, x, t, V, w, 0.05, difference)
        np.testing.assert_array_equal(fn.flatten(g1), fn.flatten(g3))
        if difference == "forward":
            assert l1 == fn.loss(spec, params, x, t)
    with pytest.raises(TypeError):
        est.wp(spec, params, x, t, np.random.default_rng(0), directions=4)  # sigma is required


# ----------------------------------------------------------------------------- optimisers


def _quadratic(seed=0):
    """f(p) = 1/2 sum a_i (p_i - p*_i)^2 with curvatures spread over 2 decades."""
    rng = np.random.default_rng(seed)
    a = [(10 ** rng.uniform(-1, 1, (3, 4)), 10 ** rng.uniform(-1, 1, 3))]
    star = [(rng.standard_normal((3, 4)), rng.standard_normal(3))]
    params = [(np.zeros((3, 4)), np.zeros(3))]

    def f(p):
        return sum(0.5 * np.sum(ai * (pi - si) ** 2) for P, A, S in zip(p, a, star)
                   for pi, ai, si in zip(P, A, S))

    def grad(p):
        return [tuple(ai * (pi - si) for pi, ai, si in zip(P, A, S)) for P, A, S in zip(p, a, star)]

    return params, f, grad


@pytest.mark.parametrize("make_opt,steps", [
    (lambda: optim.SGD(lr=0.1), 500),
    (lambda: optim.SGD(lr=0.05, momentum=0.9), 300),
    (lambda: optim.Adam(lr=0.05), 1000),
])
def test_optimisers_minimise_a_quadratic(make_opt, steps):
    """Each optimiser drives an ill-conditioned quadratic to (near) its minimum, in place."""
    params, f, grad = _quadratic()
    f0 = f(params)
    opt = make_opt()
    W = params[0][0]
    for _ in range(steps):
        out = opt.step(params, grad(params))
    assert out is params and params[0][0] is W  # in place
    assert f(params) < 1e-4 * f0


def test_adam_first_step_is_lr_times_sign():
    """With bias correction the first Adam step is lr * sign(g) (up to eps)."""
    p = [(np.zeros((2, 2)), np.zeros(2))]
    g = [(np.array([[3.0, -0.01], [1e3, -7.0]]), np.array([0.5, -2.0]))]
    optim.Adam(lr=0.1).step(p, g)
    np.testing.assert_allclose(p[0][0], -0.1 * np.sign(g[0][0]), rtol=1e-6)
    np.testing.assert_allclose(p[0][1], -0.1 * np.sign(g[0][1]), rtol=1e-6)


def test_lr_schedule_endpoints():
    """constant stays at base; cosine goes from base to floor_frac*base; step drops 10x at
    50% and 75% and respects the floor."""
    assert optim.lr_at(0, 100, 1e-3) == optim.lr_at(99, 100, 1e-3) == 1e-3
    assert optim.lr_at(0, 100, 1e-3, "cosine", 0.1) == pytest.approx(1e-3)
    assert optim.lr_at(50, 100, 1e-3, "cosine", 0.1) == pytest.approx(0.55e-3)
    assert optim.lr_at(100, 100, 1e-3, "cosine", 0.1) == pytest.approx(1e-4)
    assert optim.lr_at(500, 100, 1e-3, "cosine", 0.1) == pytest.approx(1e-4)
    lrs = [optim.lr_at(s, 100, 1.0, "cosine") for s in range(101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert optim.lr_at(49, 100, 1.0, "step") == 1.0
    assert optim.lr_at(50, 100, 1.0, "step") == pytest.approx(0.1)
    assert optim.lr_at(99, 100, 1.0, "step") == pytest.approx(0.01)
    assert optim.lr_at(99, 100, 1.0, "step", floor_frac=0.05) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        optim.lr_at(0, 100, 1.0, "linear")
