"""Gradient estimators for the float reference network (:mod:`rfsnn.host.floatnet`).

Every public estimator returns ``(loss, grads, n_forward)`` where ``grads`` is shaped like
``params`` (a list of ``(dW, db)``) and ``n_forward`` counts forward passes:

* :func:`bptt`: reverse mode through time with the surrogate derivative (baseline), 1 pass.
* :func:`rfg`: randomized forward-mode gradient ``g = mean_k (grad L . v_k) v_k`` with the
  directional derivatives computed by exact forward-mode (tangent) propagation with the
  surrogate; one pass per tangent.
* :func:`wp`: weight perturbation (zeroth order, Stein's-lemma form): only loss values at
  perturbed weights; central ``2K`` passes, forward ``K + 1``.

Directions are vectors in the canonical flat parameter order (:func:`floatnet.flatten`).
An estimate is ``g = sum_m w_m c_m v_m`` with ``c_m`` the (exact or finite-difference)
directional derivative along ``v_m`` and weights ``w_m`` from :func:`sample_directions`:

* ``mode="global"``: each v_m spans all parameters, ``w_m = 1/K``;
* ``mode="layerwise"``: direction m touches only layer ``m mod L``; each layer's gradient
  is the mean over the directions that touch it, ``w_m = 1 / K_{layer(m)}`` (a layer that
  gets no direction, when K < L, gets a zero gradient this step).

``structure="rank1"`` makes each layer's block an outer product ``a b^T`` over the augmented
matrix ``[W_l | b_l]`` (``a`` of length n_l, ``b`` of length n_{l-1}+1, its last entry
multiplying the bias column), with ``a, b`` i.i.d. unit-variance, so ``E[v v^T] = I`` still
holds: this is the direction the hardware can form on the fly as ``w_ij + s a_i b_j``.
"""

from __future__ import annotations

import numpy as np

from . import floatnet as fn
from .floatnet import FloatNetSpec, Params

NOISES = ("gaussian", "rademacher")
MODES = ("global", "layerwise")
STRUCTURES = ("full", "rank1")
DIFFERENCES = ("central", "forward")


def _prep(spec: FloatNetSpec, params: Params, x, target):
    fn._check_params(spec, params, lead_ndim=0)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != spec.layers[0]:
        raise ValueError(f"x must have shape (B, {spec.layers[0]}); got {x.shape}")
    return x, fn._target(spec, target, x.shape[0])


# ----------------------------------------------------------------------------- BPTT


def bptt(spec: FloatNetSpec, params: Params, x, target) -> tuple[float, Params, int]:
    """Exact reverse mode of :func:`floatnet.forward` with H' replaced by the surrogate.

    On ``spike="sigmoid"`` this is the true gradient of the loss.
    """
    x, target = _prep(spec, params, x, target)
    lam, theta, T = spec.lam, spec.theta, spec.T
    Ws = [W for W, _ in params]
    bs = [b for _, b in params]
    H = len(params) - 1
    B = x.shape[0]

    # forward, recording pre-reset potentials P[t][h] and spikes S[t][h]
    I1 = x @ Ws[0].T + bs[0]
    U: list = [0.0] * H
    Ps = [[None] * H for _ in range(T)]
    Ss = [[None] * H for _ in range(T)]
    count = 0.0
    for t in range(T):
        s = None
        for h in range(H):
            I = I1 if h == 0 else s @ Ws[h].T + bs[h]
            P = lam * U[h] + I
            s = fn.spike_fn(spec, P)
            U[h] = P - theta * s
            Ps[t][h], Ss[t][h] = P, s
        count = count + s
    r = count / T
    y = r @ Ws[-1].T + bs[-1]
    diff = y - target
    loss = float(np.sum(diff ** 2) / B)

    # backward
    gy = 2.0 * diff / B
    gWs = [np.zeros_like(W) for W in Ws]
    gbs = [np.zeros_like(b) for b in bs]
    gWs[-1] = gy.T @ r
    gbs[-1] = gy.sum(axis=0)
    gs_top = (gy @ Ws[-1]) / T  # dL/ds_{L-1}^t, the same for every t
    gR = [np.zeros((B, Ws[h].shape[0])) for h in range(H)]  # dL/d(post-reset U) from step t+1
    gI1 = np.zeros((B, Ws[0].shape[0]))
    for t in reversed(range(T)):
        gs_next = gs_top
        for h in reversed(range(H)):
            gs = gs_next
            if not spec.detach_reset:
                gs = gs - theta * gR[h]  # U_post = P - theta s
            gP = gR[h] + gs * fn.surrogate_grad(spec, Ps[t][h])
            if h == 0:
                gI1 += gP
            else:
                s_prev = Ss[t][h - 1]
                gWs[h] += gP.T @ s_prev
                gbs[h] += gP.sum(axis=0)
                gs_next = gP @ Ws[h]
            gR[h] = lam * gP
    gWs[0] = gI1.T @ x
    gbs[0] = gI1.sum(axis=0)
    return loss, list(zip(gWs, gbs)), 1


# ----------------------------------------------------------------------------- forward mode


def jvp(spec: FloatNetSpec, params: Params, x, target, tangents: Params) -> tuple[float, np.ndarray]:
    """Loss and its directional derivatives along M tangents, by exact forward mode.

    ``tangents`` is params-shaped with a leading axis M (``dW (M, o, i)``, ``db (M, o)``);
    the primal is shared, the tangents are propagated together (batched over samples and M).
    Spike derivatives use the surrogate (exact on the sigmoid network). Returns
    ``(loss, dloss (M,))``.
    """
    x, target = _prep(spec, params, x, target)
    fn._check_params(spec, tangents, lead_ndim=1)
    lam, theta, T = spec.lam, spec.theta, spec.T
    Ws = [W for W, _ in params]
    bs = [b for _, b in params]
    dWT = [np.swapaxes(dW, -1, -2) for dW, _ in tangents]
    dbs = [db[:, None, :] for _, db in tangents]
    H = len(params) - 1
    B = x.shape[0]

    I1 = x @ Ws[0].T + bs[0]                    # (B, n1)
    dI1 = np.matmul(x, dWT[0]) + dbs[0]          # (M, B, n1)
    U: list = [0.0] * H
    dU: list = [0.0] * H
    count, dcount = 0.0, 0.0
    for _ in range(T):
        s = ds = None
        for h in range(H):
            if h == 0:
                I, dI = I1, dI1
            else:
                I = s @ Ws[h].T + bs[h]
                dI = ds @ Ws[h].T + np.matmul(s, dWT[h]) + dbs[h]
            P = lam * U[h] + I
            dP = lam * dU[h] + dI
            s = fn.spike_fn(spec, P)
            ds = fn.surrogate_grad(spec, P) * dP
            U[h] = P - theta * s
            dU[h] = dP if spec.detach_reset else dP - theta * ds
        count = count + s
        dcount = dcount + ds
    r, dr = count / T, dcount / T
    y = r @ Ws[-1].T + bs[-1]
    dy = dr @ Ws[-1].T + np.matmul(r, dWT[-1]) + dbs[-1]
    diff = y - target
    loss = float(np.sum(diff ** 2) / B)
    dloss = 2.0 * np.sum(diff * dy, axis=(-2, -1)) / B
    return loss, dloss


# ----------------------------------------------------------------------------- directions


def _draw(rng: np.random.Generator, shape, noise: str) -> np.ndarray:
    if noise == "gaussian":
        return rng.standard_normal(shape)
    if noise == "rademacher":
        return rng.integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0
    raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")


def _layer_block(spec: FloatNetSpec, rng, l: int, n: int, noise: str, structure: str) -> np.ndarray:
    """``n`` directions for layer ``l`` (0-based) in canonical order (W row-major, then b)."""
    o, i = spec.layers[l + 1], spec.layers[l]
    if structure == "full":
        return _draw(rng, (n, o * (i + 1)), noise)
    if structure == "rank1":
        a = _draw(rng, (n, o), noise)
        b = _draw(rng, (n, i + 1), noise)
        aug = a[:, :, None] * b[:, None, :]  # (n, o, i+1) = a b^T over [W | b]
        return np.concatenate([aug[:, :, :i].reshape(n, o * i), aug[:, :, i]], axis=1)
    raise ValueError(f"structure must be one of {STRUCTURES}; got {structure!r}")


def sample_directions(spec: FloatNetSpec, rng: np.random.Generator, directions: int,
                      noise: str = "gaussian", mode: str = "global",
                      structure: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """``(V (K, d), w (K,))``: K flat directions with ``E[v v^T] = I`` on their support, and
    the weights that make ``sum_k w_k (grad . v_k) v_k`` an unbiased gradient estimate.

    ``mode="layerwise"``: direction k is supported on layer ``k mod L`` only.
    """
    K = int(directions)
    if K < 1:
        raise ValueError(f"directions must be >= 1; got {directions}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}; got {structure!r}")
    L = spec.n_weight_layers
    slices = fn.layer_slices(spec)
    V = np.zeros((K, fn.n_params(spec)))
    if mode == "global":
        for l in range(L):
            V[:, slices[l]] = _layer_block(spec, rng, l, K, noise, structure)
        return V, np.full(K, 1.0 / K)
    if mode == "layerwise":
        w = np.zeros(K)
        for l in range(L):
            rows = np.arange(l, K, L)
            if rows.size:
                V[rows, slices[l]] = _layer_block(spec, rng, l, rows.size, noise, structure)
                w[rows] = 1.0 / rows.size
        return V, w
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")


def combine(spec: FloatNetSpec, V: np.ndarray, weights: np.ndarray, coeffs: np.ndarray) -> Params:
    """``sum_m weights_m coeffs_m V_m`` as a params-shaped list."""
    return fn.unflatten(spec, (weights * coeffs) @ V)


# ----------------------------------------------------------------------------- RFG


def rfg_with_directions(spec: FloatNetSpec, params: Params, x, target, V: np.ndarray,
                        weights: np.ndarray) -> tuple[float, Params, int, np.ndarray]:
    """RFG for given flat directions ``V (M, d)``; also returns the coefficients ``grad . v_m``."""
    loss, c = jvp(spec, params, x, target, fn.unflatten(spec, V))
    return loss, combine(spec, V, weights, c), V.shape[0], c


def rfg(spec: FloatNetSpec, params: Params, x, target, rng: np.random.Generator, *,
        directions: int = 8, mode: str = "global", noise: str = "gaussian",
        structure: str = "full") -> tuple[float, Params, int]:
    """Randomized forward-mode gradient, ``g = mean_k (grad L . v_k) v_k``.

    ``mode="global"``: K directions over all parameters, K tangent passes.
    ``mode="layerwise"``: for each of the K directions, one v_l per layer and
    ``g_l = mean_k (grad_l L . v_{k,l}) v_{k,l}``; each layer's directional derivative has its
    own tangent (all K*L tangents propagated in one batched call), so ``n_forward = K * L``.
    """
    if mode == "layerwise":
        V, w = sample_directions(spec, rng, directions * spec.n_weight_layers, noise, "layerwise", structure)
    elif mode == "global":
        V, w = sample_directions(spec, rng, directions, noise, "global", structure)
    else:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    loss, g, n, _ = rfg_with_directions(spec, params, x, target, V, w)
    return loss, g, n


# ----------------------------------------------------------------------------- WP


def wp_with_directions(spec: FloatNetSpec, params: Params, x, target, V: np.ndarray,
                       weights: np.ndarray, sigma: float, difference: str = "central"
                       ) -> tuple[float, Params, int, np.ndarray]:
    """Weight perturbation along given flat directions ``V (K, d)``; all variants in one
    :func:`floatnet.loss_many` call. Returns ``(loss, grads, n_forward, coeffs)`` with
    ``coeffs_k`` the finite-difference slope along ``v_k``.

    The returned loss is ``L(w)`` for forward differences; for central differences (which do
    not evaluate ``L(w)``) it is ``mean_k (L(w + s v_k) + L(w - s v_k)) / 2``.
    """
    x, target = _prep(spec, params, x, target)
    sigma = float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    w0 = fn.flatten(params)
    K = V.shape[0]
    if difference == "central":
        variants = np.concatenate([w0 + sigma * V, w0 - sigma * V], axis=0)
        Ls = fn.loss_many(spec, fn.unflatten(spec, variants), x, target)
        Lp, Lm = Ls[:K], Ls[K:]
        c = (Lp - Lm) / (2.0 * sigma)
        loss = float(np.mean(0.5 * (Lp + Lm)))
    elif difference == "forward":
        variants = np.concatenate([w0[None], w0 + sigma * V], axis=0)
        Ls = fn.loss_many(spec, fn.unflatten(spec, variants), x, target)
        c = (Ls[1:] - Ls[0]) / sigma
        loss = float(Ls[0])
    else:
        raise ValueError(f"difference must be one of {DIFFERENCES}; got {difference!r}")
    return loss, combine(spec, V, weights, c), variants.shape[0], c


def wp(spec: FloatNetSpec, params: Params, x, target, rng: np.random.Generator, *,
       directions: int = 8, sigma: float, noise: str = "rademacher",
       difference: str = "central", mode: str = "global",
       structure: str = "full") -> tuple[float, Params, int]:
    """Weight perturbation: ``g = mean_k (L(w + s v_k) - L(w - s v_k)) / (2 s) v_k`` (central)
    or ``(L(w + s v_k) - L(w)) / s v_k`` (forward). An unbiased estimate of the gradient of
    the Gaussian/Rademacher-smoothed loss (the true gradient for small ``sigma`` on a smooth
    network). ``mode="layerwise"``: direction k perturbs only layer ``k mod L``.
    ``n_forward``: ``2K`` central, ``K + 1`` forward.
    """
    V, w = sample_directions(spec, rng, directions, noise, mode, structure)
    loss, g, n, _ = wp_with_directions(spec, params, x, target, V, w, sigma, difference)
    return loss, g, n


# ----------------------------------------------------------------------------- helpers


def directional_derivative_fd(spec: FloatNetSpec, params: Params, x, target, v,
                              h: float = 1e-5) -> np.ndarray:
    """Central finite difference ``(L(w + h v) - L(w - h v)) / 2h`` of the loss.

    ``v`` is a flat direction ``(d,)`` or a stack ``(M, d)`` (or params-shaped); all
    evaluations go through one ``loss_many`` call. Returns a scalar array or ``(M,)``.
    """
    if isinstance(v, list):
        v = fn.flatten(v)
    v = np.asarray(v, dtype=np.float64)
    single = v.ndim == 1
    V = np.atleast_2d(v)
    w0 = fn.flatten(params)
    x, target = _prep(spec, params, x, target)
    Ls = fn.loss_many(spec, fn.unflatten(spec, np.concatenate([w0 + h * V, w0 - h * V])), x, target)
    M = V.shape[0]
    out = (Ls[:M] - Ls[M:]) / (2.0 * h)
    return out[0] if single else out
