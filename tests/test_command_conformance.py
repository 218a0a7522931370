"""The command interface, response for response: the gateware (rtl.learner) and the software device
(sim.golden_device) given the same command script answer alike, refusals and pointers included.
Only the clock counters differ (the software device has no clock). The script runs in Amaranth's
simulator, and as exported Verilog on Icarus and Verilator (sim.learner_sim.simulate_script)."""
import numpy as np
import pytest
from amaranth.hdl import Fragment

from rfsnn.rtl.learner import Learner
from rfsnn.sim.contract.commands import INFO_FIELDS, Counter, Op, Reg, mode_bits
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden_device import GoldenDevice
from rfsnn.sim.learner_sim import simulate_script

from learnersim import random_problem, run_learner

MASK64 = (1 << 64) - 1


def command_script(cfg: DeviceConfig) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(11)
    params, x, t = random_problem(cfg, 7, seed=4)
    cmds = [(Op.INFO, i, 0) for i in range(len(INFO_FIELDS) + len(cfg.layers) + 1)]  # the last one is refused
    cmds += [(Op.SET, Reg.BATCH, 0), (Op.SET, Reg.BATCH, cfg.max_batch + 1), (Op.SET, 99, 1), (Op.NOP, 0, 0),
             (77, 0, 0), (Op.PARAM_REWIND, 0, 0)]
    for p in params:
        cmds += [(Op.PARAM_WRITE, 0, int(v) & MASK64) for v in p.ravel()]
        cmds.append((Op.PARAM_WRITE, 0, 1 << 15))  # refused, the pointer stays
    cmds += [(Op.PARAM_REWIND, 0, 0)] + [(Op.PARAM_READ, 0, 0)] * (cfg.n_params + 1)  # one past the end
    cmds += [(Op.SAMPLE_SEEK, 0, cfg.max_batch), (Op.SAMPLE_SEEK, 0, 0)]
    for xs, ts in zip(x, t):
        cmds += [(Op.SAMPLE_WRITE, 0, int(v) & MASK64) for v in list(xs) + list(ts)]
    cmds += [(Op.SAMPLE_WRITE, 0, (-(1 << 20)) & MASK64)]  # refused
    cmds += [(Op.SET, Reg.BATCH, 7), (Op.INFER, 0, 0), (Op.SAMPLE_SEEK, 0, 0)]
    cmds += [(Op.OUTPUT_READ, 0, 0)] * (9 * cfg.layers[-1])  # two samples past the batch
    for n, (noise, diff, scope, sr) in enumerate([("rademacher", "central", "global", True),
                                                  ("gauss4", "forward", "layerwise", False)]):
        cmds += [(Op.CLEAR_COUNTERS, 0, 0), (Op.SET, Reg.SEED, int(rng.integers(0, 1 << 32))),
                 (Op.SET, Reg.DIRECTIONS, 2 + n), (Op.SET, Reg.SIGMA, 64), (Op.SET, Reg.GAIN_MANT, 50000),
                 (Op.SET, Reg.GAIN_SHIFT, 27), (Op.SET, Reg.CLIP, 2000), (Op.SET, Reg.LAYER_START, 1),
                 (Op.SET, Reg.MODE, mode_bits(noise, diff, scope, sr)), (Op.TRAIN_STEP, 0, 0)]
        cmds += [(Op.READ_LOSS, i, 0) for i in range(2 * cfg.max_directions + 2)]
        cmds += [(Op.READ_STEP, k, 0) for k in range(cfg.max_directions + 1)]
        cmds += [(Op.READ_COUNTER, i, 0) for i in range(Counter.SPIKE_FANOUT, Counter.SPIKES + len(cfg.layers) - 1)]
        cmds += [(Op.PARAM_READ, 0, 0), (Op.PARAM_REWIND, 0, 0)] + [(Op.PARAM_READ, 0, 0)] * cfg.n_params
    cmds += [(Op.SET, Reg.BATCH, 3), (Op.INFER, 0, 0), (Op.SAMPLE_SEEK, 0, 0)]
    cmds += [(Op.OUTPUT_READ, 0, 0)] * (8 * cfg.layers[-1])  # 0-2 new, 3-6 from the first INFER
    cmds += training_set_script(cfg, rng)
    return [(int(op), i, v) for op, i, v in cmds]


def training_set_script(cfg: DeviceConfig, rng) -> list[tuple[int, int, int]]:
    """The training set and TRAIN_STEPS (docs/fixed-point.md section 7): the set pointer's refusals, the
    run's registers, runs of one and three steps (central and forward, global and layer-wise, batches
    of part-filled sample groups, SAMPLES not a power of two, DATA_SEED 0 and not), and after each run
    what it leaves: the last step's losses and steps, the weights, its batch in the batch memory (INFER,
    OUTPUT_READ), and SEED and LAYER_START moved on (a TRAIN_STEP after it)."""
    n_set = cfg.max_samples - 5
    _, xs, ts = random_problem(cfg, n_set, seed=6)
    fields = lambda b: [int(v) & MASK64 for v in list(xs[b]) + list(ts[b])]  # noqa: E731
    cmds = [(Op.DATA_SEEK, 0, cfg.max_samples), (Op.DATA_SEEK, 0, cfg.max_samples - 1)]
    cmds += [(Op.DATA_WRITE, 0, v) for v in fields(0)] + [(Op.DATA_WRITE, 0, 1)]  # the last sample, then past it
    cmds += [(Op.DATA_SEEK, 0, 0)]
    for b in range(n_set):
        cmds += [(Op.DATA_WRITE, 0, v) for v in fields(b)]
        if b == 3:
            cmds += [(Op.DATA_WRITE, 0, 1 << 20)]  # out of the input format: refused, the pointer stays
    cmds += [(Op.SET, Reg.SAMPLES, 0), (Op.SET, Reg.SAMPLES, cfg.max_samples + 1), (Op.SET, Reg.SAMPLES, n_set),
             (Op.SET, Reg.DATA_SEED, 1 << 32), (Op.SET, Reg.DATA_SEED, 0), (Op.TRAIN_STEPS, 0, 0),
             (Op.TRAIN_STEPS, 0, 257), (Op.TRAIN_STEPS, 0, 1 << 40)]
    runs = [  # steps, batch, SAMPLES, DATA_SEED (None: where the last run left it), directions, mode
        (3, 5, n_set, None, 2, ("rademacher", "central", "layerwise", True)),
        (1, 7, 13, int(rng.integers(1, 1 << 32)), 3, ("gauss4", "forward", "global", False)),
        (3, 3, 13, None, 4, ("rademacher", "forward", "layerwise", True)),
    ]
    for steps, batch, samples, data_seed, directions, mode in runs:
        cmds += [(Op.SET, Reg.BATCH, batch), (Op.SET, Reg.SAMPLES, samples), (Op.SET, Reg.DIRECTIONS, directions),
                 (Op.SET, Reg.MODE, mode_bits(*mode)), (Op.CLEAR_COUNTERS, 0, 0)]
        cmds += [(Op.SET, Reg.DATA_SEED, data_seed)] if data_seed is not None else []
        cmds += [(Op.TRAIN_STEPS, 0, steps)]
        cmds += [(Op.READ_LOSS, i, 0) for i in range(2 * directions)]
        cmds += [(Op.READ_STEP, k, 0) for k in range(directions)]
        cmds += [(Op.READ_COUNTER, i, 0) for i in range(Counter.SPIKE_FANOUT, Counter.SPIKES + len(cfg.layers) - 1)]
        cmds += [(Op.PARAM_REWIND, 0, 0)] + [(Op.PARAM_READ, 0, 0)] * cfg.n_params
        cmds += [(Op.INFER, 0, 0), (Op.SAMPLE_SEEK, 0, 0)] + [(Op.OUTPUT_READ, 0, 0)] * (batch * cfg.layers[-1])
        cmds += [(Op.TRAIN_STEP, 0, 0)] + [(Op.READ_LOSS, i, 0) for i in range(2 * directions)]
    return cmds


def golden_responses(cfg, script, N, S):
    device = GoldenDevice(cfg, N, S)
    return [device.execute(*c) for c in script]


def assert_alike(script, got, expected):
    assert len(got) == len(expected)
    for n, (c, g, e) in enumerate(zip(script, got, expected)):
        assert g == e, f"command {n} {Op(c[0]).name if c[0] in Op._value2member_map_ else c[0]}{c[1:]}: rtl {g}, golden {e}"


def amaranth_responses(cfg, script, N, S):
    got = []

    async def run(session):
        for c in script:
            got.append(await session._transact(*c))

    run_learner(cfg, None, None, None, [], N, S, script=run)
    return got


# a set of 24 samples: seeks and writes past its end are quick to reach
CONFORMANCE_CFG = DeviceConfig(layers=(2, 5, 4, 2), t_steps=8, max_batch=16, max_directions=4, max_samples=24)


def test_rtl_and_golden_device_answer_alike():
    cfg = CONFORMANCE_CFG
    script = command_script(cfg)
    expected = golden_responses(cfg, script, 2, 2)
    assert_alike(script, amaranth_responses(cfg, script, 2, 2), expected)
    statuses = {s for s, _ in expected}
    assert statuses == {0, 1, 2}  # ok, refused and unknown all occur
    runs = [e for c, e in zip(script, expected) if c[0] == Op.TRAIN_STEPS and e[0] == 0]
    assert len(runs) == 3 and all(total > 0 for _, total in runs)


@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_verilog_and_golden_device_answer_alike(simulator, tmp_path, require_simulator):
    """The same script on the exported Verilog: the drawer's multiplier and the set RAMs as Verilog."""
    require_simulator(simulator)
    cfg = CONFORMANCE_CFG
    script = command_script(cfg)
    got = simulate_script(cfg, script, simulator, 2, 2, build_dir=tmp_path,
                          verilator_opt="-O0" if simulator == "verilator" else None)
    assert_alike(script, got, golden_responses(cfg, script, 2, 2))


def run_script(cfg, K, difference):
    """A set of 6 samples, then TRAIN_STEPS(2) of batch 3 with K directions, and READ_LOSS of its last step."""
    params, x, t = random_problem(cfg, 6, seed=3)
    cmds = [(Op.PARAM_REWIND, 0, 0)] + [(Op.PARAM_WRITE, 0, int(v) & MASK64) for p in params for v in p.ravel()]
    cmds += [(Op.DATA_SEEK, 0, 0)] + [(Op.DATA_WRITE, 0, int(v) & MASK64)
                                      for xs, ts in zip(x, t) for v in list(xs) + list(ts)]
    cmds += [(Op.SET, Reg.SAMPLES, 6), (Op.SET, Reg.BATCH, 3), (Op.SET, Reg.DIRECTIONS, K),
             (Op.SET, Reg.GAIN_MANT, 50000), (Op.SET, Reg.GAIN_SHIFT, 27), (Op.SET, Reg.CLIP, 2000),
             (Op.SET, Reg.MODE, mode_bits("rademacher", difference, "global", True)), (Op.TRAIN_STEPS, 0, 1),
             (Op.READ_LOSS, 0, 0), (Op.READ_LOSS, 1, 0)]
    return [(int(op), i, v) for op, i, v in cmds]


RUN_CFG = DeviceConfig(layers=(2, 5, 1), t_steps=8, max_batch=8, max_directions=3, max_samples=8)


@pytest.mark.parametrize("K,difference", [(1, "forward"), (3, "forward"), (2, "forward"), (1, "central")])
def test_a_run_sums_each_steps_base_loss(K, difference):
    """docs/fixed-point.md section 7: a step's base loss is losses[0] (forward differences, whatever K: K + 1
    losses, odd or even) or (losses[0] + losses[1]) >> 1 (central); a run of one step returns its own."""
    script = run_script(RUN_CFG, K, difference)
    for device in (amaranth_responses, golden_responses):
        (_, total), (_, l0), (_, l1) = device(RUN_CFG, script, 1, 2)[-3:]
        assert total == (l0 if difference == "forward" else (l0 + l1) >> 1), device.__name__


def test_a_build_without_a_training_set_refuses_its_commands():
    """max_samples 0 (the iCEBreaker's): no set RAMs, no drawer; DATA_SEEK, DATA_WRITE, TRAIN_STEPS and
    SET SAMPLES refused, SET DATA_SEED taken (and without effect), as on the golden device."""
    cfg = DeviceConfig(layers=(2, 5, 1), t_steps=8, max_batch=8, max_directions=2, max_samples=0)
    script = [(Op.INFO, i, 0) for i in range(len(INFO_FIELDS) + len(cfg.layers) + 1)]
    script += [(Op.DATA_SEEK, 0, 0), (Op.DATA_WRITE, 0, 1), (Op.SET, Reg.SAMPLES, 1), (Op.SET, Reg.SAMPLES, 0),
               (Op.SET, Reg.DATA_SEED, 5), (Op.TRAIN_STEPS, 0, 1), (Op.TRAIN_STEPS, 0, 0), (Op.SET, Reg.BATCH, 2),
               (Op.TRAIN_STEP, 0, 0)]
    script = [(int(op), i, v) for op, i, v in script]
    expected = golden_responses(cfg, script, 1, 2)
    assert_alike(script, amaranth_responses(cfg, script, 1, 2), expected)
    set_commands = (Op.DATA_SEEK, Op.DATA_WRITE, Op.TRAIN_STEPS)
    assert [s for (op, _, _), (s, _) in zip(script, expected) if op in set_commands] == [1] * 4
    learner = Learner(cfg, 1, 2)
    assert not {"set_x", "set_t"} & set(learner.memory_map())
    assert "drawer" not in [name for _, name, *_ in Fragment.get(learner, None).subfragments]


def test_cycle_counters_total_the_operations():
    """CYCLES_BUSY totals the CYCLES_LAST of every operation since CLEAR_COUNTERS (the gateware folds each
    operation's counts into its totals when the operation ends)."""
    cfg = DeviceConfig(layers=(2, 5, 2), t_steps=4, max_batch=8, max_directions=2)
    params, x, t = random_problem(cfg, 4, seed=2)
    load = [(Op.PARAM_REWIND, 0, 0)] + [(Op.PARAM_WRITE, 0, int(v) & MASK64) for p in params for v in p.ravel()]
    load += [(Op.SAMPLE_SEEK, 0, 0)] + [(Op.SAMPLE_WRITE, 0, int(v) & MASK64) for xs, ts in zip(x, t)
                                        for v in list(xs) + list(ts)]
    load += [(Op.SET, Reg.BATCH, 4), (Op.CLEAR_COUNTERS, 0, 0)]
    ops = [(Op.INFER, 0, 0), (Op.TRAIN_STEP, 0, 0), (Op.INFER, 0, 0)]
    last, busy = [], []

    async def run(session):
        for c in load:
            await session._transact(*c)
        for c in ops:
            await session._transact(*c)
            last.append((await session._transact(Op.READ_COUNTER, Counter.CYCLES_LAST, 0))[1])
            busy.append((await session._transact(Op.READ_COUNTER, Counter.CYCLES_BUSY, 0))[1])
        await session._transact(Op.CLEAR_COUNTERS, 0, 0)
        busy.append((await session._transact(Op.READ_COUNTER, Counter.CYCLES_BUSY, 0))[1])
        last.append((await session._transact(Op.READ_COUNTER, Counter.CYCLES_LAST, 0))[1])

    run_learner(cfg, None, None, None, [], 1, 2, script=run)
    assert all(n > 0 for n in last[:3]) and last[0] == last[2]  # the same INFER twice: the same cycles
    assert busy[:3] == [last[0], last[0] + last[1], last[0] + last[1] + last[2]]
    assert busy[3] == 0 and last[3] == 0
