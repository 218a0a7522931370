"""The golden model against an independent, literal reading of docs/fixed-point.md.

`scalar_*` below use Python integers one sample at a time, sharing no code with the vectorised model
(which computes in float64 and over whole batches), so agreement checks both the arithmetic and the
vectorisation.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rfsnn.sim.contract import lfsr
from rfsnn.sim.contract.config import ConfigError, DeviceConfig, StepParams
from rfsnn.sim.golden import GoldenModel, first_layer_trains, join_params, split_params


# ---- the contract, literally, in Python integers ----------------------------------------------------
def _sat(v, bits):
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def _rsr(v, n):
    return (v + (1 << (n - 1))) >> n if n else v


def scalar_forward(cfg, params, x):
    """One sample: returns (outputs, spikes per hidden layer)."""
    hidden = params[:-1]
    th = cfg.threshold_q
    cur0 = [_sat(_rsr(sum(int(w) * int(xi) for w, xi in zip(row[:-1], x)), cfg.x_frac) + int(row[-1]), cfg.u_bits)
            for row in hidden[0]]
    U = [[0] * p.shape[0] for p in hidden]
    count = [0] * hidden[-1].shape[0]
    spikes = [0] * len(hidden)
    for _ in range(cfg.t_steps):
        prev = None
        for l, p in enumerate(hidden):
            s = []
            for i, row in enumerate(p):
                if l == 0:
                    c = cur0[i]
                else:
                    c = _sat(sum(int(row[j]) for j in range(len(prev)) if prev[j]) + int(row[-1]), cfg.u_bits)
                u = _sat(U[l][i] - (U[l][i] >> cfg.leak_shift) + c, cfg.u_bits)
                fire = u >= th
                U[l][i] = u - th if fire else u
                s.append(fire)
            spikes[l] += sum(s)
            prev = s
        count = [c + f for c, f in zip(count, prev)]
    out = [_sat(_rsr(sum(int(w) * c for w, c in zip(row[:-1], count)), cfg.t_shift) + int(row[-1]), cfg.y_bits)
           for row in params[-1]]
    return out, spikes


def scalar_loss(cfg, params, X, Y):
    total = 0
    for x, y in zip(X, Y):
        out, _ = scalar_forward(cfg, params, x)
        total += sum((o - int(t)) ** 2 for o, t in zip(out, y))
    return min(total, cfg.loss_max)


def random_params(cfg, rng, scale=1.0):
    """Weights spread over a useful part of the range (so neurons spike), sometimes at the rails."""
    lo, hi = cfg.w_range
    out = []
    for o, i in cfg.layer_shapes:
        p = rng.normal(0, scale * cfg.threshold_q / np.sqrt(i), size=(o, i + 1))
        p[:, -1] += 0.3 * cfg.threshold_q
        out.append(np.clip(np.round(p), lo, hi).astype(np.int64))
    return out


def random_batch(cfg, rng, B):
    x = rng.integers(-(1 << cfg.x_frac), (1 << cfg.x_frac) + 1, size=(B, cfg.layers[0]))
    y = rng.integers(-(1 << cfg.w_frac), (1 << cfg.w_frac) + 1, size=(B, cfg.layers[-1]))
    return x, y


SHAPES = [(2, 8, 1), (1, 6, 5, 2), (3, 4, 4, 3, 1)]


@pytest.mark.parametrize("layers", SHAPES)
@pytest.mark.parametrize("leak_shift,T", [(3, 16), (1, 4), (5, 8)])
def test_batch_equals_scalar_loop(layers, leak_shift, T):
    cfg = DeviceConfig(layers=layers, t_steps=T, leak_shift=leak_shift)
    rng = np.random.default_rng(sum(layers) * 7 + T)
    gm = GoldenModel(cfg)
    params = random_params(cfg, rng)
    x, y = random_batch(cfg, rng, 12)
    out = gm.infer(params, x)
    spikes = np.zeros(len(layers) - 2, np.int64)
    for b in range(len(x)):
        ref, sp = scalar_forward(cfg, params, x[b])
        assert list(out[b]) == ref, f"sample {b}"
        spikes += sp
    assert gm.counters.spikes == list(spikes)
    assert spikes.sum() > 0, "test data should make neurons spike"
    assert gm.loss(params, x, y) == scalar_loss(cfg, params, x, y)


def test_float64_loop_path_equals_scalar_loop():
    """Wide membranes take the float64 time loop instead of the float32 one; same contract."""
    cfg = DeviceConfig(layers=(2, 6, 5, 1), t_steps=8, u_bits=28)
    gm = GoldenModel(cfg)
    assert gm.loop_dtype == np.float64 and GoldenModel(DeviceConfig()).loop_dtype == np.float32
    rng = np.random.default_rng(11)
    params = random_params(cfg, rng, scale=3.0)
    x, y = random_batch(cfg, rng, 10)
    out = gm.infer(params, x)
    for b in range(len(x)):
        assert list(out[b]) == scalar_forward(cfg, params, x[b])[0]


@settings(max_examples=40, deadline=None)
@given(u_bits=st.integers(16, 24), threshold=st.sampled_from([0.25, 1.0, 3.0, 7.5]), leak_shift=st.integers(1, 7),
       t_steps=st.sampled_from([1, 2, 16, 32]), seed=st.integers(0, 2**32 - 1))
def test_first_layer_table_equals_the_time_loop_for_every_current(u_bits, threshold, leak_shift, t_steps, seed):
    """The model reads first-layer spike trains from a table over currents 0..theta and clamps the current
    into it (below: never fires, above: fires every step). Checked against the literal time loop on the
    rails, the table's edges and random currents over the whole membrane range, including thresholds
    near the rail where the membrane saturates."""
    cfg = DeviceConfig(layers=(1, 4, 1), u_bits=u_bits, threshold=threshold, leak_shift=leak_shift, t_steps=t_steps)
    table = first_layer_trains(cfg)
    lo, hi = cfg.u_range
    th = cfg.threshold_q
    rng = np.random.default_rng(seed)
    currents = [lo, lo + 1, -th, -1, 0, 1, th - 1, th, th + 1, hi - 1, hi, *rng.integers(lo, hi + 1, 8),
                *rng.integers(0, th + 1, 24)]
    for current in currents:
        u, train = 0, []
        for _ in range(cfg.t_steps):
            u = _sat(u - (u >> cfg.leak_shift) + int(current), cfg.u_bits)
            train.append(u >= th)
            u -= th if train[-1] else 0
        assert list(table[:, min(max(current, 0), th)]) == train, current


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rail=st.sampled_from(["max", "min", "mixed"]))
def test_saturation_never_wraps(seed, rail):
    """Weights and inputs at the rails drive every sum to its limits; results clamp, never wrap."""
    cfg = DeviceConfig(layers=(2, 6, 5, 1), t_steps=8, u_bits=18, y_bits=16, loss_bits=34, max_batch=8)
    rng = np.random.default_rng(seed)
    lo, hi = cfg.w_range
    params = []
    for o, i in cfg.layer_shapes:
        if rail == "max":
            p = np.full((o, i + 1), hi)
        elif rail == "min":
            p = np.full((o, i + 1), lo)
        else:
            p = rng.choice([lo, hi, 0, cfg.threshold_q], size=(o, i + 1))
        params.append(p.astype(np.int64))
    xlo, xhi = cfg.x_range
    x = rng.choice([xlo, xhi], size=(8, 2))
    y = rng.choice(list(cfg.y_range), size=(8, 1))
    gm = GoldenModel(cfg)
    out = gm.infer(params, x)
    assert out.min() >= cfg.y_range[0] and out.max() <= cfg.y_range[1]
    for b in range(8):
        assert list(out[b]) == scalar_forward(cfg, params, x[b])[0]
    assert gm.loss(params, x, y) == scalar_loss(cfg, params, x, y) <= cfg.loss_max


def test_lif_update_is_the_contract_step():
    """The element-wise primitive the gateware is checked against equals the literal neuron step."""
    from rfsnn.sim.golden import lif_update

    cfg = DeviceConfig(u_bits=18, leak_shift=2)
    rng = np.random.default_rng(9)
    lo, hi = cfg.u_range
    u, cur = rng.integers(lo, hi + 1, 3000), rng.integers(lo, hi + 1, 3000)
    got_u, got_s = lif_update(u, cur, cfg)
    for a, c, gu, gs in zip(u.tolist(), cur.tolist(), got_u.tolist(), got_s.tolist()):
        v = _sat(a - (a >> cfg.leak_shift) + c, cfg.u_bits)
        fire = v >= cfg.threshold_q
        assert (gu, gs) == (v - cfg.threshold_q if fire else v, fire)


def test_input_current_is_the_contract_step():
    from rfsnn.sim.golden import input_current

    cfg = DeviceConfig(layers=(3, 4, 1), u_bits=18)
    rng = np.random.default_rng(10)
    w = rng.integers(*cfg.w_range, size=(500, 3))
    x = rng.integers(*cfg.x_range, size=(500, 3))
    b = rng.integers(*cfg.w_range, size=500)
    got = input_current(w, b, x, cfg)
    for k in range(500):
        acc = sum(int(a) * int(c) for a, c in zip(w[k], x[k]))
        assert got[k] == _sat(_rsr(acc, cfg.x_frac) + int(b[k]), cfg.u_bits)


def test_loss_saturates():
    cfg = DeviceConfig(layers=(1, 2, 1), loss_bits=20, max_batch=16)
    params = [np.array([[0, 0], [0, 0]]), np.array([[0, 0, 0]])]
    x = np.zeros((16, 1), np.int64)
    y = np.full((16, 1), cfg.y_range[1])
    assert GoldenModel(cfg).loss(params, x, y) == cfg.loss_max


# ---- training step -------------------------------------------------------------------------------
def replayed_factors(cfg, sp):
    """Rank-one factors of each direction, regenerated by clocking the LFSR (docs/fixed-point.md, noise)."""
    per = 1 if sp.noise == "rademacher" else 4
    need = sum((o + i + 1) for o, i in cfg.layer_shapes) * per * sp.directions
    bits = list(lfsr.stream_reference(sp.seed, need, cfg.lfsr_width, cfg.lfsr_taps))
    pos = 0

    def value():
        nonlocal pos
        if per == 1:
            v = 1 - 2 * int(bits[pos])
        else:
            v = sum(int(b) for b in bits[pos:pos + 4]) - 2
        pos += per
        return v

    dirs = []
    for k in range(sp.directions):
        layers = range(cfg.n_layers) if sp.scope == "global" else [(sp.layer_start + k) % cfg.n_layers]
        d = {}
        for l in layers:
            o, i = cfg.layer_shapes[l]
            a = [value() for _ in range(o)]
            b = [value() for _ in range(i + 1)]
            d[l] = (np.array(a), np.array(b))
        dirs.append(d)
    return dirs, pos


def perturbed(cfg, params, d, sign, sigma):
    lo, hi = cfg.w_range
    return [np.clip(p + sign * sigma * np.outer(*d[l]), lo, hi) if l in d else p for l, p in enumerate(params)]


MODES = [
    dict(noise="rademacher", difference="central", scope="global"),
    dict(noise="rademacher", difference="forward", scope="global"),
    dict(noise="rademacher", difference="central", scope="layerwise", layer_start=1),
    dict(noise="gauss4", difference="forward", scope="layerwise"),
    dict(noise="gauss4", difference="central", scope="global"),
]


@pytest.mark.parametrize("layers", SHAPES)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_step_matches_replayed_noise(layers, mode):
    """Losses are those of the explicitly perturbed networks; the update is exactly -round(sum_k step_k v_k)."""
    cfg = DeviceConfig(layers=layers, t_steps=8)
    rng = np.random.default_rng(len(layers))
    params = random_params(cfg, rng)
    x, y = random_batch(cfg, rng, 10)
    sp = StepParams(seed=int(rng.integers(2**32)), directions=3, sigma=200, gain_mant=45000, gain_shift=18,
                    clip=30000, stochastic_rounding=False, **mode)
    gm = GoldenModel(cfg)
    new, res = gm.train_step(params, x, y, sp)
    dirs, _ = replayed_factors(cfg, sp)
    expect_losses = []
    if sp.difference == "forward":
        expect_losses.append(scalar_loss(cfg, params, x, y))
    for d in dirs:
        expect_losses.append(scalar_loss(cfg, perturbed(cfg, params, d, +1, sp.sigma), x, y))
        if sp.difference == "central":
            expect_losses.append(scalar_loss(cfg, perturbed(cfg, params, d, -1, sp.sigma), x, y))
    assert res.losses == expect_losses
    for k, d in enumerate(dirs):
        diff = (expect_losses[2 * k] - expect_losses[2 * k + 1] if sp.difference == "central"
                else expect_losses[1 + k] - expect_losses[0])
        assert res.loss_diffs[k] == diff
        assert res.steps[k] == max(-sp.clip, min(sp.clip, _rsr(diff * sp.gain_mant, sp.gain_shift)))
    F = cfg.step_frac
    for l, p in enumerate(params):
        delta = sum((res.steps[k] * np.outer(*d[l]) for k, d in enumerate(dirs) if l in d), np.zeros_like(p))
        expect = np.clip(p - ((delta + (1 << (F - 1))) >> F), *cfg.w_range)
        assert np.array_equal(new[l], expect), f"layer {l}"
    assert any(not np.array_equal(a, b) for a, b in zip(new, params)), "the step should change something"
    if sp.scope == "layerwise":
        touched = {(sp.layer_start + k) % cfg.n_layers for k in range(sp.directions)}
        for l in set(range(cfg.n_layers)) - touched:
            assert np.array_equal(new[l], params[l])


def test_stochastic_rounding_uses_the_bits_after_the_noise():
    cfg = DeviceConfig(layers=(2, 5, 1), t_steps=8)
    rng = np.random.default_rng(5)
    params = random_params(cfg, rng)
    x, y = random_batch(cfg, rng, 8)
    sp = StepParams(seed=99, directions=2, sigma=100, gain_mant=50000, gain_shift=20, clip=5000,
                    stochastic_rounding=True)
    new, res = GoldenModel(cfg).train_step(params, x, y, sp)
    dirs, n_noise = replayed_factors(cfg, sp)
    F = cfg.step_frac
    bits = lfsr.stream_reference(sp.seed, n_noise + cfg.n_params * F, cfg.lfsr_width, cfg.lfsr_taps)[n_noise:]
    r = [sum(int(b) << m for m, b in enumerate(bits[w * F:(w + 1) * F])) for w in range(cfg.n_params)]
    pos = 0
    for l, p in enumerate(params):
        delta = sum((res.steps[k] * np.outer(*d[l]) for k, d in enumerate(dirs)), np.zeros_like(p))
        rr = np.array(r[pos:pos + p.size]).reshape(p.shape)
        pos += p.size
        assert np.array_equal(new[l], np.clip(p - ((delta + rr) >> F), *cfg.w_range))


def test_stochastic_rounding_is_unbiased():
    """Averaged over seeds, a sub-LSB update moves the weights by its exact expected value."""
    cfg = DeviceConfig(layers=(1, 4, 1), t_steps=4)
    rng = np.random.default_rng(1)
    params = random_params(cfg, rng)
    x, y = random_batch(cfg, rng, 4)
    gm = GoldenModel(cfg)
    moved, expected = [], []
    for seed in range(1, 400):
        sp = StepParams(seed=seed, directions=1, sigma=300, gain_mant=40000, gain_shift=30, clip=(1 << 23) - 1)
        new, res = gm.train_step(params, x, y, sp)
        dirs, _ = replayed_factors(cfg, sp)
        for l, p in enumerate(params):
            moved.append((new[l] - p).ravel())
            expected.append((-res.steps[0] * np.outer(*dirs[0][l]) / (1 << cfg.step_frac)).ravel())
    moved, expected = np.concatenate(moved), np.concatenate(expected)
    assert np.abs(expected).max() < 8  # small steps: rounding matters
    assert abs(moved.sum() - expected.sum()) < 4 * np.sqrt(len(moved) * 0.25) + 1  # within 4 sigma of the sum


def test_step_is_deterministic_and_seed_dependent():
    cfg = DeviceConfig(layers=(2, 8, 1), t_steps=8)
    rng = np.random.default_rng(3)
    params = random_params(cfg, rng)
    x, y = random_batch(cfg, rng, 16)
    sp = StepParams(seed=7, gain_mant=50000, gain_shift=24)
    a = GoldenModel(cfg).train_step(params, x, y, sp)
    b = GoldenModel(cfg).train_step(params, x, y, sp)
    c = GoldenModel(cfg).train_step(params, x, y, StepParams(seed=8, gain_mant=50000, gain_shift=24))
    assert all(np.array_equal(p, q) for p, q in zip(a[0], b[0])) and a[1].losses == b[1].losses
    assert a[1].losses != c[1].losses


def test_zero_seed_step_perturbs():
    cfg = DeviceConfig(layers=(2, 8, 1), t_steps=8)
    rng = np.random.default_rng(4)
    params = random_params(cfg, rng)
    x, y = random_batch(cfg, rng, 16)
    _, res = GoldenModel(cfg).train_step(params, x, y, StepParams(seed=0))
    assert len(set(res.losses)) > 1


def test_clip_bounds_the_step():
    cfg = DeviceConfig(layers=(2, 8, 1), t_steps=8)
    rng = np.random.default_rng(6)
    params = random_params(cfg, rng)
    x, y = random_batch(cfg, rng, 16)
    _, res = GoldenModel(cfg).train_step(params, x, y, StepParams(seed=3, gain_mant=65535, gain_shift=1, clip=77))
    assert all(abs(s) == 77 for s in res.steps if s)


def test_bad_inputs_are_refused():
    cfg = DeviceConfig(layers=(2, 4, 1), max_batch=8)
    gm = GoldenModel(cfg)
    params = random_params(cfg, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="range"):
        gm.infer(params, np.array([[1 << 15, 0]]))
    with pytest.raises(ConfigError, match="shape"):
        gm.infer(params, np.zeros((3, 3), np.int64))
    with pytest.raises(ConfigError, match="holds 1..8"):
        gm.loss(params, np.zeros((9, 2), np.int64), np.zeros((9, 1), np.int64))
    with pytest.raises(ConfigError, match="directions"):
        gm.train_step(params, np.zeros((2, 2), np.int64), np.zeros((2, 1), np.int64), StepParams(seed=1, directions=0))
    with pytest.raises(ConfigError, match="power of two"):
        DeviceConfig(t_steps=12)


def test_split_join_roundtrip():
    cfg = DeviceConfig(layers=(2, 5, 3, 1))
    params = random_params(cfg, np.random.default_rng(0))
    again = join_params(split_params(params))
    assert all(np.array_equal(a, b) for a, b in zip(params, again))
