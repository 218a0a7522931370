"""rtl.learner.Learner in Amaranth's simulator: whole training steps, bit-identical with the golden model.

The cocotb tests (test_rtl_learner_cocotb.py) run the exported Verilog on Icarus and Verilator; these
are the quick checks of the same design, one per shape, lane split and mode.
"""
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfsnn.sim.contract.commands import Op, Reg, Status
from rfsnn.sim.contract.config import ConfigError, DeviceConfig, StepParams
from rfsnn.sim.session import DeviceError

from learnersim import assert_matches_golden, random_problem, run_learner

SMALL = dict(t_steps=8, max_batch=16, max_directions=4)

CASES = [  # layers, neuron lanes, sample lanes, batch, step parameters (beyond the seed)
    ((2, 8, 1), 1, 4, 6, dict(directions=2)),
    ((2, 8, 1), 2, 2, 5, dict(directions=3, noise="gauss4", difference="forward")),
    ((1, 5, 3), 3, 2, 7, dict(directions=2, scope="layerwise", stochastic_rounding=False)),
    ((2, 4, 2), 4, 1, 3, dict(directions=4, noise="gauss4", scope="layerwise", layer_start=1)),
    ((2, 3, 1), 8, 2, 16, dict(directions=1, difference="forward", stochastic_rounding=False)),
    # two and three hidden layers: the event-driven path
    ((2, 6, 5, 1), 1, 4, 6, dict(directions=2)),
    ((2, 6, 5, 1), 2, 2, 5, dict(directions=2, noise="gauss4", scope="layerwise", layer_start=2)),
    ((1, 4, 7, 3, 2), 3, 2, 7, dict(directions=3, difference="forward", stochastic_rounding=False)),
    # round-half-up ties: every step clipped to +-127, so each weight's delta is +-127 and delta + 128
    # lands on (or just below) a multiple of 2^step_frac: a one-LSB error in the rounding constant shows
    ((2, 5, 1), 1, 2, 4, dict(directions=1, stochastic_rounding=False, gain_mant=65535, gain_shift=12, clip=127)),
]


@pytest.mark.parametrize("layers,nl,sl,batch,extra", CASES)
def test_training_steps_bit_exact(layers, nl, sl, batch, extra):
    cfg = DeviceConfig(layers=layers, **SMALL)
    params, x, t = random_problem(cfg, batch, seed=sum(layers) + nl)
    steps = [StepParams(**{"seed": 0x1234 + 77 * n, "sigma": 64, "gain_mant": 40000, "gain_shift": 26, "clip": 3000,
                           **extra}) for n in range(2)]
    if extra.get("scope") == "layerwise":
        steps[1] = dataclasses.replace(steps[1], layer_start=(steps[0].layer_start + 1) % cfg.n_layers)
    trace = run_learner(cfg, params, x, t, steps, nl, sl)
    assert_matches_golden(cfg, params, x, t, steps, trace)
    assert any(report.steps != [0] * len(report.steps) for report, _, _ in trace.steps)  # the weights moved


@pytest.mark.parametrize("max_directions,layers,nl,extra", [
    (5, (2, 6, 1), 1, [dict(directions=5, noise="gauss4"), dict(directions=4, scope="layerwise", layer_start=1)]),
    (16, (2, 4, 3, 1), 2, [dict(directions=16, noise="gauss4", difference="forward", scope="layerwise", layer_start=2),
                           dict(directions=7, stochastic_rounding=False)]),
])
def test_update_forms_bit_exact(max_directions, layers, nl, extra):
    """The update pass's other form of the sum (UpdateDelta: shift-multiplexers, here without and with
    the adder tree's pipeline register; the builds above, with 4 directions, use multipliers), every
    direction of the build in use."""
    from rfsnn.rtl.learner.update import UpdateDelta

    cfg = DeviceConfig(layers=layers, **{**SMALL, "max_directions": max_directions})
    multipliers, split, _ = UpdateDelta.plan(cfg)
    assert not multipliers and (split is not None) == (max_directions > 8)
    params, x, t = random_problem(cfg, 5, seed=max_directions)
    steps = [StepParams(**{"seed": 0xBEEF + n, "sigma": 64, "gain_mant": 40000, "gain_shift": 26, "clip": 3000, **e})
             for n, e in enumerate(extra)]
    trace = run_learner(cfg, params, x, t, steps, nl, 2)
    assert_matches_golden(cfg, params, x, t, steps, trace)


@pytest.mark.parametrize("layers,nl,sl,batch,extra", [CASES[0], CASES[5]])
def test_training_steps_bit_exact_with_lut_ram(layers, nl, sl, batch, extra):
    """The ECP5 build's memories (the pass buffer in LUT RAM) compute the same bits."""
    cfg = DeviceConfig(layers=layers, **SMALL)
    params, x, t = random_problem(cfg, batch, seed=3)
    steps = [StepParams(seed=0x99 + n, sigma=64, gain_mant=40000, gain_shift=26, clip=3000, **extra) for n in range(2)]
    trace = run_learner(cfg, params, x, t, steps, nl, sl, distributed_ram=True)
    assert_matches_golden(cfg, params, x, t, steps, trace)


def test_rails_saturate_like_golden():
    """Weights and inputs at the rails, sigma at its limit, a narrow loss accumulator, clipped steps."""
    cfg = DeviceConfig(layers=(2, 4, 2), loss_bits=30, **SMALL)
    lo, hi = cfg.w_range
    rng = np.random.default_rng(5)
    params = [rng.choice([lo, hi, 0, 1], size=(o, i + 1)) for o, i in cfg.layer_shapes]
    x = rng.choice([cfg.x_range[0], cfg.x_range[1]], size=(5, 2))
    t = rng.choice([cfg.y_range[0], cfg.y_range[1]], size=(5, 2))
    steps = [StepParams(seed=0, sigma=hi // 4, gain_mant=65535, gain_shift=1, clip=cfg.step_range[1],
                        noise="gauss4")]
    trace = run_learner(cfg, params, x, t, steps, 2, 2)
    p = assert_matches_golden(cfg, params, x, t, steps, trace)
    assert trace.steps[0][0].losses[0] == cfg.loss_max  # the loss saturated
    assert (np.concatenate([a.ravel() for a in p]) == hi).any() or (np.concatenate([a.ravel() for a in p]) == lo).any()


def test_commands_refuse_out_of_range_values():
    cfg = DeviceConfig(layers=(2, 3, 1), **SMALL)
    seen = {}

    async def script(s):
        for name, call in [("batch0", (Op.SET, Reg.BATCH, 0)), ("batch_big", (Op.SET, Reg.BATCH, 17)),
                           ("k_big", (Op.SET, Reg.DIRECTIONS, 5)), ("shift0", (Op.SET, Reg.GAIN_SHIFT, 0)),
                           ("weight_big", (Op.PARAM_WRITE, 0, 1 << 15)), ("x_low", (Op.SAMPLE_WRITE, 0, -(1 << 15) - 1)),
                           ("seek_big", (Op.SAMPLE_SEEK, 0, 16)), ("unknown", (200, 0, 0)), ("info_big", (Op.INFO, 999, 0)),
                           ("seed_big", (Op.SET, Reg.SEED, 1 << 32)), ("batch_huge", (Op.SET, Reg.BATCH, (1 << 40) + 1)),
                           ("weight_low", (Op.PARAM_WRITE, 0, -(1 << 15) - 1)), ("seek_huge", (Op.SAMPLE_SEEK, 0, 1 << 40)),
                           ("x_big", (Op.SAMPLE_WRITE, 0, 1 << 15))]:
            op, index, value = call
            status, _ = await s._transact(int(op), index, value & ((1 << 64) - 1))
            seen[name] = status
        seen["info"] = await s.info()
        await s.write_params([np.full((3, 3), -5), np.full((1, 4), 7)])
        seen["params"] = await s.read_params()
        try:
            await s.call(Op.PARAM_READ)  # past the last parameter
        except DeviceError as e:
            seen["past_end"] = str(e)

    run_learner(cfg, None, None, None, [], 1, 2, script=script)
    assert seen.pop("unknown") == Status.UNKNOWN
    info = seen.pop("info")
    assert info == (cfg, 1, 2)
    params = seen.pop("params")
    assert (params[0] == -5).all() and (params[1] == 7).all()  # the refused write changed nothing
    assert "RANGE" in seen.pop("past_end")
    assert all(v == Status.RANGE for v in seen.values()), seen


def test_unbuildable_lanes_are_refused():
    from rfsnn.rtl.learner import Learner

    with pytest.raises(ConfigError, match="power of two"):
        Learner.check_lanes(DeviceConfig(), 1, 3)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_builds_and_steps_bit_exact(data):
    """Random shapes, lane splits, batches, seeds (zero included) and step options: one step each."""
    hidden = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=2), label="hidden")
    layers = (data.draw(st.integers(1, 2), label="n0"), *hidden, data.draw(st.integers(1, 3), label="nL"))
    cfg = DeviceConfig(layers=layers, t_steps=data.draw(st.sampled_from([4, 8]), label="T"), max_batch=16,
                       max_directions=4, leak_shift=data.draw(st.integers(1, 4), label="leak_shift"))
    nl = data.draw(st.integers(1, 3), label="neuron_lanes")
    sl = data.draw(st.sampled_from([1, 2, 4]), label="sample_lanes")
    batch = data.draw(st.integers(1, 9), label="batch")
    sp = StepParams(seed=data.draw(st.sampled_from([0, 1, 0xDEADBEEF, 0x5A5A5A5A]), label="seed"),
                    directions=data.draw(st.integers(1, 3), label="K"),
                    sigma=data.draw(st.sampled_from([1, 64, cfg.w_range[1] // 4]), label="sigma"),
                    gain_mant=data.draw(st.integers(0, 65535), label="gain_mant"),
                    gain_shift=data.draw(st.integers(18, 30), label="gain_shift"), clip=3000,
                    noise=data.draw(st.sampled_from(["rademacher", "gauss4"]), label="noise"),
                    difference=data.draw(st.sampled_from(["central", "forward"]), label="difference"),
                    scope=data.draw(st.sampled_from(["global", "layerwise"]), label="scope"),
                    layer_start=data.draw(st.integers(0, cfg.n_layers - 1), label="layer_start"),
                    stochastic_rounding=data.draw(st.booleans(), label="stochastic_rounding"))
    params, x, t = random_problem(cfg, batch, seed=data.draw(st.integers(0, 2**16), label="data seed"))
    trace = run_learner(cfg, params, x, t, [sp], nl, sl)
    assert_matches_golden(cfg, params, x, t, [sp], trace)
