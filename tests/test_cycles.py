"""sim.cycles, the exact cycle model, against the gateware: Amaranth's simulator over shapes, lanes and
step options here; the shipped board configurations on Verilator in test_rtl_board_defaults.py."""
import pytest

from rfsnn.sim.contract.commands import Op, Reg
from rfsnn.sim.contract.config import ConfigError, DeviceConfig, StepParams
from rfsnn.sim.cycles import infer_cycles, train_step_cycles, train_steps_cycles

from learnersim import random_problem, run_learner

STEPS = [  # (K, difference, noise, scope, stochastic rounding, gain_shift)
    (1, "central", "rademacher", "global", True, 26),
    (3, "central", "rademacher", "global", True, 26),
    (2, "forward", "rademacher", "global", False, 20),
    (2, "central", "gauss4", "global", True, 26),
    (3, "central", "rademacher", "layerwise", True, 30),
    (4, "forward", "gauss4", "layerwise", False, 18),
]


def measured(cfg, N, S, batch, steps):
    """CYCLES_LAST of INFER (lanes empty), INFER again (lanes loaded where one group), then each step."""
    params, x, t = random_problem(cfg, batch, seed=1)
    out = []

    async def script(s):
        await s.write_params(params)
        await s.load_batch(x, t)
        for run in [s.infer, s.infer] + [lambda sp=sp: s.train_step(sp) for sp in steps]:
            await s.call(Op.CLEAR_COUNTERS)
            await run()
            out.append((await s.counters())["cycles_last"])

    run_learner(cfg, params, x, t, [], N, S, script=script)
    return out


@pytest.mark.parametrize("layers,N,S,batch,max_directions", [
    ((2, 8, 1), 1, 4, 6, 4),  # two groups, the last partly filled
    ((2, 8, 1), 1, 4, 4, 4),  # one group: loaded once per command
    ((2, 8, 1), 2, 2, 5, 4),
    ((1, 5, 3), 3, 2, 7, 4),  # outputs in two chunks
    ((2, 3, 1), 1, 1, 3, 4),
    ((2, 16, 2), 1, 8, 16, 12),  # more than 8 directions: the update's deeper adder tree
    ((1, 40, 1), 1, 1, 1, 4),  # passes shorter than the draws: the draws set the pace
    ((1, 40, 1), 2, 1, 1, 4),  # ... and with factor registers, which wait for the passes
])
def test_model_counts_every_clock(layers, N, S, batch, max_directions):
    cfg = DeviceConfig(layers=layers, t_steps=8, max_batch=16, max_directions=max_directions)
    steps = [StepParams(seed=5, directions=K, difference=d, noise=n, scope=sc, stochastic_rounding=sr, sigma=64,
                        gain_mant=40000, gain_shift=gs, clip=3000) for K, d, n, sc, sr, gs in STEPS]
    got = measured(cfg, N, S, batch, steps)
    one_group = batch <= S
    expected = [infer_cycles(cfg, N, S, batch), infer_cycles(cfg, N, S, batch, loaded=one_group)]
    expected += [train_step_cycles(cfg, N, S, batch, sp, loaded=one_group) for sp in steps]
    assert got == expected


def measured_runs(cfg, N, S, batch, runs):
    """CYCLES_LAST of each TRAIN_STEPS(n) for (StepParams, n) in runs, on a set of 11 samples."""
    params, x, t = random_problem(cfg, 11, seed=1)
    out = []

    async def script(s):
        await s.write_params(params)
        await s.call(Op.DATA_SEEK, value=0)
        for v in [v for xs, ts in zip(x, t) for v in list(xs) + list(ts)]:
            await s.call(Op.DATA_WRITE, value=int(v))
        for reg, v in ((Reg.SAMPLES, len(x)), (Reg.DATA_SEED, 3), (Reg.BATCH, batch)):
            await s.call(Op.SET, reg, v)
        for sp, n in runs:
            await s.set_step_params(sp)
            await s.call(Op.TRAIN_STEPS, value=n)
            out.append((await s.counters())["cycles_last"])

    run_learner(cfg, params, x, t, [], N, S, script=script)
    return out


@pytest.mark.parametrize("layers,N,S,batch", [
    ((2, 8, 1), 1, 4, 6),  # two groups, the last partly filled
    ((2, 8, 1), 1, 4, 3),  # one group: loaded once per step, not once per run
    ((1, 5, 3), 3, 2, 7),  # factor registers; outputs in two chunks
])
def test_model_counts_every_clock_of_a_run(layers, N, S, batch):
    """TRAIN_STEPS: per step the draw (B + 1 stream words and the pipeline), then the step on a batch just
    written; layer-wise, LAYER_START moves on between steps and with it the draws' lengths."""
    cfg = DeviceConfig(layers=layers, t_steps=8, max_batch=16, max_directions=4, max_samples=16)
    runs = [(StepParams(seed=5, directions=K, difference=d, noise=n, scope=sc, stochastic_rounding=sr, sigma=64,
                        gain_mant=40000, gain_shift=gs, clip=3000), steps)
            for (K, d, n, sc, sr, gs), steps in zip([STEPS[0], STEPS[4], STEPS[5]], [1, 3, 2])]
    got = measured_runs(cfg, N, S, batch, runs)
    assert got == [train_steps_cycles(cfg, N, S, batch, sp, steps) for sp, steps in runs]


def test_model_refuses_what_it_cannot_predict():
    with pytest.raises(ConfigError, match="one hidden layer"):
        train_step_cycles(DeviceConfig(layers=(2, 8, 8, 1)), 1, 4, 4, StepParams(seed=1))


@pytest.mark.parametrize("layers,N,S,batch", [((2, 64, 1), 1, 64, 64), ((2, 64, 1), 1, 8, 64), ((1, 16, 3), 2, 4, 7),
                                              ((3, 5, 2), 4, 2, 5)])
@pytest.mark.parametrize("difference", ["central", "forward"])
def test_lane_clocks_bound_the_work_and_fit_the_step(layers, N, S, batch, difference):
    """The three figures are consistent: every necessary operation happens in a lane clock, at most P per
    clock (work efficiency <= lane occupancy), and the lane clocks are part of the step's clocks."""
    from rfsnn.sim.cycles import lane_clocks, train_step_cycles
    from rfsnn.sim.learner_sim import step_figures

    cfg = DeviceConfig(layers=layers, t_steps=8, max_batch=64, max_directions=8)
    sp = StepParams(seed=1, directions=3, difference=difference)
    cycles = train_step_cycles(cfg, N, S, batch, sp)
    f = step_figures(cfg, N, S, batch, sp, [0], cycles)
    assert 0 < f["work_efficiency"] <= f["lane_occupancy"] < 1
    assert lane_clocks(cfg, N, S, batch, sp) < cycles
    assert 0 < f["multiplier_occupancy"] < f["lane_occupancy"]
