"""Device-side data: quantisation refusals, scaling round trips, deterministic datasets."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rfsnn.host.dataset import Dataset, Scaler, validate_points
from rfsnn.sim.contract.fixed import dequantize, quantize, representable_range
from rfsnn.host.problems import PROBLEMS, get_problem

# --------------------------------------------------------------------------- quantize


def test_representable_range():
    assert representable_range(12, 16) == (-8.0, 7.999755859375)
    assert representable_range(0, 8) == (-128.0, 127.0)


def test_quantize_round_trip_is_exact_on_representable_values():
    ints = np.array([-(2**15), -1, 0, 1, 12345, 2**15 - 1])
    vals = ints / 2.0**12
    q = quantize(vals, 12, 16)
    assert q.dtype == np.int64 and q.shape == vals.shape
    assert np.array_equal(q, ints)
    assert np.array_equal(dequantize(q, 12), vals)
    two_d = vals.reshape(2, 3)
    assert np.array_equal(quantize(two_d, 12, 16), ints.reshape(2, 3))


def test_quantize_rounds_half_to_even():
    lsb = 2.0**-4
    assert quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5]) * lsb, 4, 8).tolist() == [0, 2, 2, 0, -2]


def test_quantize_refusals_name_sample_and_value():
    with pytest.raises(
        ValueError,
        match=r"^target sample 3: value 9.1 is outside the representable range "
        r"\[-8, 7.999755859375\] \(16-bit, 12 fractional bits\)$",
    ):
        quantize(np.array([0.0, 1.0, -2.0, 9.1, 10.0]), 12, 16, what="target")
    x = np.zeros((20, 2))
    x[17, 1] = np.nan
    x[18, 0] = 100.0  # later offenders are not reported
    msg = r"^input sample 17, column 1: value nan is not a finite number$"
    with pytest.raises(ValueError, match=msg):
        quantize(x, 12, 16, what="input")
    with pytest.raises(ValueError, match=r"^value sample 1: value -inf is not a finite number$"):
        quantize([0.0, -np.inf], 12, 16)
    with pytest.raises(ValueError, match=r"sample 0: value inf is not a finite number"):
        quantize([np.inf], 12, 16)
    with pytest.raises(ValueError, match=r"sample 2: value -8.5 is outside .*\[-8, 7.9997558"):
        quantize([1.0, -8.0, -8.5], 12, 16)
    # the limit is on the rounded integer: half an LSB above the top rounds out of range
    top = 7.999755859375
    assert quantize([top + 2.0**-14], 12, 16)[0] == 2**15 - 1
    with pytest.raises(ValueError, match="sample 0: value 7.9998779296875 is outside"):
        quantize([top + 2.0**-13], 12, 16)
    assert quantize([-8.0 - 2.0**-13], 12, 16)[0] == -(2**15)  # tie rounds to the even bottom word
    with pytest.raises(ValueError, match="1e\\+300 is outside"):
        quantize([1e300], 12, 16)


def test_quantize_refuses_bad_formats():
    with pytest.raises(ValueError, match="total_bits"):
        quantize([0.0], 4, 64)
    with pytest.raises(ValueError, match="frac_bits"):
        quantize([0.0], -1, 16)
    with pytest.raises(ValueError, match="integers"):
        dequantize([0.5], 4)


@st.composite
def _value_and_format(draw):
    frac_bits = draw(st.integers(0, 24))
    total_bits = draw(st.integers(2, 32))
    lsb = 2.0**-frac_bits
    half = 2 ** (total_bits - 1)
    near_edge = st.builds(
        lambda word, off: (word + off) * lsb,
        st.sampled_from([-half - 1, -half, half - 1, half]),
        st.sampled_from([-0.5, -0.25, 0.0, 0.25, 0.5]) | st.floats(-1, 1),
    )
    anywhere = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
    return draw(near_edge | anywhere), frac_bits, total_bits


@given(_value_and_format())
def test_quantize_property(case):
    v, frac_bits, total_bits = case
    lo, hi = representable_range(frac_bits, total_bits)
    lsb = 2.0**-frac_bits
    try:
        q = quantize(np.array([v]), frac_bits, total_bits)
    except ValueError as e:
        assert "sample 0" in str(e) and "outside the representable range" in str(e)
        # ties round to even: the odd top word rounds up and out, the even bottom word stays
        assert v >= hi + lsb / 2 or v < lo - lsb / 2
        return
    assert -(2 ** (total_bits - 1)) <= q[0] <= 2 ** (total_bits - 1) - 1
    assert abs(dequantize(q, frac_bits)[0] - v) <= lsb / 2
    assert lo - lsb / 2 <= v < hi + lsb / 2


# --------------------------------------------------------------------------- validate_points


def test_validate_points_refusals():
    p = get_problem("reaction-diffusion")
    x = np.full((10, 2), 0.5)
    x[4, 1] = 1.25
    x[7, 0] = np.inf
    with pytest.raises(
        ValueError,
        match=r"^input sample 4, column 1 \(t\): value 1.25 is outside the allowed interval \[0, 1\]$",
    ):
        validate_points(x, p)
    x[4, 1] = 0.5
    msg = r"^input sample 7, column 0 \(x\): value inf is not a finite number$"
    with pytest.raises(ValueError, match=msg):
        validate_points(x, p)
    msg = r"sample 0, column 1 \(y\): value -1.5 is outside .*\[-1, 1\]"
    with pytest.raises(ValueError, match=msg):
        validate_points([[0.0, -1.5]], get_problem("mexican-hat"), what="test")
    with pytest.raises(ValueError, match=r"shape \(N, 1\)"):
        validate_points(np.zeros(5), get_problem("poisson1d"))
    ok = validate_points([[-1e-13, 1 + 1e-13]], p)
    assert ok.tolist() == [[0.0, 1.0]]


# --------------------------------------------------------------------------- Scaler


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_scaler_maps_box_to_unit_cube(name):
    p = get_problem(name)
    sc = Scaler.for_problem(p)
    corners = np.array(np.meshgrid(*zip(p.lower, p.upper), indexing="ij")).reshape(p.dim, -1).T
    dev = sc.inputs(corners)
    assert set(np.unique(dev)) == {-1.0, 1.0}
    assert np.array_equal(dev == 1.0, corners == p.upper)
    g = p.test_grid()
    xd = sc.inputs(g)
    assert xd.min() == -1.0 and xd.max() == 1.0
    np.testing.assert_allclose(sc.inputs_to_task(xd), g, atol=1e-15)
    u = p.reference(g)
    ud = sc.targets(u)
    assert np.max(np.abs(ud)) == pytest.approx(1 / 1.25)
    np.testing.assert_allclose(sc.outputs_to_task(ud), u, rtol=1e-15)
    back = Scaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert back.target_scale == sc.target_scale
    assert np.array_equal(back.lower, sc.lower) and np.array_equal(back.upper, sc.upper)


def test_scaler_explicit_scale_and_refusals():
    p = get_problem("poisson1d")
    sc = Scaler.for_problem(p, target_scale=2.0)
    assert sc.targets(np.array([1.0, -3.0])).tolist() == [0.5, -1.5]
    assert sc.outputs_to_task(np.array([0.5])).tolist() == [1.0]
    with pytest.raises(ValueError, match="target_scale"):
        Scaler.for_problem(p, target_scale=0.0)
    with pytest.raises(ValueError, match="lacks target_scale"):
        Scaler.from_dict({"lower": [0.0], "upper": [1.0]})
    with pytest.raises(ValueError, match="last axis of length 1"):
        sc.inputs(np.zeros((3, 2)))


# --------------------------------------------------------------------------- Dataset


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_dataset_is_deterministic(name):
    p = get_problem(name)
    a = Dataset.make(p, 300, seed=7)
    b = Dataset.make(p, 300, seed=7)
    c = Dataset.make(p, 300, seed=8)
    for field in ("x_train", "u_train", "x_test", "u_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (300, p.dim) and a.u_train.shape == (300,)
    assert np.array_equal(a.u_train, p.reference(a.x_train))
    assert np.array_equal(a.x_test, p.test_grid())
    assert a.scaler.to_dict() == Scaler.for_problem(p).to_dict()
    validate_points(a.x_train, p)
    # scaled data fits a 16-bit, 12-fractional-bit device word
    quantize(a.scaler.inputs(a.x_train), 12, 16, what="input")
    quantize(a.scaler.targets(a.u_train), 12, 16, what="target")


def test_batches_cover_each_epoch_once():
    ds = Dataset.make(get_problem("poisson1d"), 10, seed=0)
    it = ds.batches(4, np.random.default_rng(0))
    for _ in range(3):
        epoch = [next(it) for _ in range(3)]
        assert [len(x) for x, _ in epoch] == [4, 4, 2]
        xs = np.concatenate([x for x, _ in epoch])
        assert sorted(xs[:, 0].tolist()) == sorted(ds.x_train[:, 0].tolist())
        for x, u in epoch:
            assert np.array_equal(u, ds.problem.reference(x))
    it = ds.batches(4, np.random.default_rng(0), drop_last=True)
    assert [len(next(it)[0]) for _ in range(5)] == [4] * 5
    a = [x for x, _ in (next(ds.batches(3, np.random.default_rng(5))) for _ in range(2))]
    assert np.array_equal(a[0], a[1])  # same rng seed, same stream
    with pytest.raises(ValueError, match="batch size"):
        next(ds.batches(0, np.random.default_rng(0)))
