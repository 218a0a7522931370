"""Tests of the float reference network: it must implement the documented LIF definition
exactly, batch over samples and parameter variants consistently, and start trainable."""

import numpy as np
import pytest

from rfsnn.host import floatnet as fn


def reference_forward(spec, params, x):
    """Literal per-sample, per-neuron transcription of the definition (slow, independent)."""
    lam, theta, T = spec.lam, spec.theta, spec.T
    L = len(params)
    out = np.zeros((x.shape[0], spec.layers[-1]))
    for bi in range(x.shape[0]):
        W1, b1 = params[0]
        I1 = [sum(W1[i, j] * x[bi, j] for j in range(W1.shape[1])) + b1[i] for i in range(W1.shape[0])]
        U = [[0.0] * spec.layers[l] for l in range(1, L)]
        count = [0.0] * spec.layers[L - 1]
        for _ in range(T):
            s_prev = None
            for l in range(1, L):
                W, b = params[l - 1]
                s = []
                for i in range(W.shape[0]):
                    I = I1[i] if l == 1 else sum(W[i, j] * s_prev[j] for j in range(W.shape[1])) + b[i]
                    u = lam * U[l - 1][i] + I
                    if spec.spike == "heaviside":
                        si = 1.0 if u >= theta else 0.0
                    else:
                        z = u - theta
                        si = 0.5 * (1 + spec.slope * z / (1 + spec.slope * abs(z)))
                    U[l - 1][i] = u - theta * si
                    s.append(si)
                s_prev = s
            count = [c + si for c, si in zip(count, s_prev)]
        WL, bL = params[-1]
        for o in range(WL.shape[0]):
            out[bi, o] = sum(WL[o, j] * count[j] / T for j in range(WL.shape[1])) + bL[o]
    return out


@pytest.mark.parametrize("spike", ["heaviside", "sigmoid"])
@pytest.mark.parametrize("layers", [(2, 5, 4, 1), (3, 6, 2), (2, 4, 3, 3, 2)])
def test_forward_matches_literal_definition(spike, layers):
    """The vectorised forward must equal a literal transcription of the spec."""
    spec = fn.FloatNetSpec(layers, T=7, leak_shift=2, theta=0.8, spike=spike)
    rng = np.random.default_rng(1)
    params = fn.init_params(spec, rng)
    x = rng.uniform(-1, 1, (5, layers[0]))
    np.testing.assert_allclose(fn.forward(spec, params, x), reference_forward(spec, params, x),
                               rtol=0, atol=1e-12)


def test_spike_at_exact_threshold_and_reset_by_subtraction():
    """H(0) = 1: a constant current of exactly theta spikes every step (U hits theta, resets
    to 0, hits theta again); with a strict comparison the rate would be 0."""
    spec = fn.FloatNetSpec((1, 1, 1), T=8, theta=1.0)
    params = [(np.zeros((1, 1)), np.array([1.0])), (np.array([[2.0]]), np.array([0.5]))]
    y = fn.forward(spec, params, np.zeros((1, 1)))
    assert y[0, 0] == 2.0 * 1.0 + 0.5
    # just below threshold: I = 1 - 2**-3 reaches theta only by accumulation, and the
    # subtraction keeps the remainder, so the rate is below 1 but above 0
    params[0] = (np.zeros((1, 1)), np.array([0.875]))
    r = (fn.forward(spec, params, np.zeros((1, 1)))[0, 0] - 0.5) / 2.0
    assert 0 < r < 1


def test_forward_many_equals_loop_and_shapes():
    """Evaluating V variants at once must equal evaluating them one by one."""
    spec = fn.FloatNetSpec((2, 5, 4, 1), T=6)
    rng = np.random.default_rng(2)
    base = fn.flatten(fn.init_params(spec, rng))
    V = 7
    vecs = base + 0.3 * rng.standard_normal((V, base.size))
    x = rng.uniform(-1, 1, (9, 2))
    t = rng.uniform(-1, 1, (9, 1))
    pv = fn.unflatten(spec, vecs)
    y = fn.forward_many(spec, pv, x)
    Ls = fn.loss_many(spec, pv, x, t)
    assert y.shape == (V, 9, 1) and Ls.shape == (V,)
    for v in range(V):
        p = fn.unflatten(spec, vecs[v])
        np.testing.assert_array_equal(y[v], fn.forward(spec, p, x))
        assert Ls[v] == pytest.approx(fn.loss(spec, p, x, t), rel=1e-14)
        assert fn.loss(spec, p, x, t) == pytest.approx(np.sum((fn.forward(spec, p, x) - t) ** 2) / 9, rel=1e-14)


def test_flatten_canonical_order_and_roundtrip():
    """Layer by layer, W row-major (row = output neuron), then b; leading axes preserved."""
    spec = fn.FloatNetSpec((2, 3, 1))
    d = fn.n_params(spec)
    assert d == 3 * 2 + 3 + 1 * 3 + 1
    vec = np.arange(d, dtype=float)
    (W1, b1), (W2, b2) = fn.unflatten(spec, vec)
    np.testing.assert_array_equal(W1, [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(b1, [6, 7, 8])
    np.testing.assert_array_equal(W2, [[9, 10, 11]])
    np.testing.assert_array_equal(b2, [12])
    np.testing.assert_array_equal(fn.flatten(fn.unflatten(spec, vec)), vec)
    many = np.arange(4 * d, dtype=float).reshape(4, d)
    pv = fn.unflatten(spec, many)
    assert pv[0][0].shape == (4, 3, 2) and pv[1][1].shape == (4, 1)
    np.testing.assert_array_equal(fn.flatten(pv), many)


def test_target_shape_is_checked():
    """A (B,) target must not silently broadcast against (B, 1) outputs into (B, B)."""
    spec = fn.FloatNetSpec((2, 3, 2))
    p = fn.init_params(spec, np.random.default_rng(0))
    with pytest.raises(ValueError):
        fn.loss(spec, p, np.zeros((4, 2)), np.zeros(4))


def test_init_deterministic_and_neurons_in_dynamic_range():
    """Same rng seed gives the same params; at init most hidden neurons have rates strictly
    between 0 and 1 on a non-trivial part of the input box (none dead or saturated everywhere)."""
    spec = fn.FloatNetSpec((2, 64, 64, 1), T=16)
    p1 = fn.init_params(spec, np.random.default_rng(3))
    p2 = fn.init_params(spec, np.random.default_rng(3))
    np.testing.assert_array_equal(fn.flatten(p1), fn.flatten(p2))
    x = np.random.default_rng(4).uniform(-1, 1, (1000, 2))
    for r in fn.simulate_hidden(spec, p1[:-1], x):
        in_range = ((r > 0) & (r < 1)).mean(axis=0)  # fraction of the box per neuron
        assert np.mean(in_range > 0.1) > 0.8
        assert np.all(r.max(axis=0) > 0) and np.all(r.min(axis=0) < 1)
