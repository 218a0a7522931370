"""The command interface, response for response: the gateware (rtl.learner) and the software device
(sim.golden_device) given the same command script answer alike, refusals and pointers included.
Only the clock counters differ (the software device has no clock)."""
import numpy as np

from rfsnn.sim.contract.commands import INFO_FIELDS, Counter, Op, Reg, mode_bits
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden_device import GoldenDevice

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
        cmds += [(Op.READ_COUNTER, i, 0) for i in range(Counter.SYNAPTIC_OPS, Counter.SPIKES + len(cfg.layers) - 1)]
        cmds += [(Op.PARAM_READ, 0, 0), (Op.PARAM_REWIND, 0, 0)] + [(Op.PARAM_READ, 0, 0)] * cfg.n_params
    cmds += [(Op.SET, Reg.BATCH, 3), (Op.INFER, 0, 0), (Op.SAMPLE_SEEK, 0, 0)]
    cmds += [(Op.OUTPUT_READ, 0, 0)] * (8 * cfg.layers[-1])  # 0-2 new, 3-6 from the first INFER
    return [(int(op), i, v) for op, i, v in cmds]


def test_rtl_and_golden_device_answer_alike():
    cfg = DeviceConfig(layers=(2, 5, 4, 2), t_steps=8, max_batch=16, max_directions=4)
    script = command_script(cfg)
    device = GoldenDevice(cfg, 2, 2)
    expected = [device.execute(*c) for c in script]
    got = []

    async def run(session):
        for c in script:
            got.append(await session._transact(*c))

    run_learner(cfg, None, None, None, [], 2, 2, script=run)
    assert len(got) == len(expected)
    for n, (c, g, e) in enumerate(zip(script, got, expected)):
        assert g == e, f"command {n} {Op(c[0]).name if c[0] in Op._value2member_map_ else c[0]}{c[1:]}: rtl {g}, golden {e}"
    statuses = {s for s, _ in expected}
    assert statuses == {0, 1, 2}  # ok, refused and unknown all occur


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
