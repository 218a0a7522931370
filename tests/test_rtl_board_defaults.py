"""Every board's shipped device (boards/targets.py: its network, widths, lanes and memory limits), one
training step at its largest sizes (max_batch samples, max_directions directions) on the exported
Verilog: bit-exact against the golden model, and in exactly the clocks sim/cycles.py predicts, so that a
change which costs cycles fails here until the model says why. Verilator for every distinct device;
Icarus (4-state, so an X that reaches a result shows) for the largest ECP5 device at the task's batch."""
import pytest

from rfsnn.boards.targets import TARGETS
from rfsnn.host.backends import random_problem
from rfsnn.sim.cycles import infer_cycles, train_step_cycles
from rfsnn.sim.learner_sim import compare_with_golden, make_steps, simulate


def devices() -> dict[str, tuple]:
    """name (the boards that ship it) -> (cfg, neuron lanes, sample lanes): each distinct device once."""
    out: dict[tuple, list[str]] = {}
    for name, target in TARGETS.items():
        out.setdefault((target.cfg, target.neuron_lanes, target.sample_lanes), []).append(name)
    return {"+".join(names): key for key, names in out.items()}


DEVICES = devices()


def step_on(simulator, cfg, N, S, batch, directions, tmp_path):
    params, x, t = random_problem(cfg, batch, seed=batch + directions)
    sp = make_steps(cfg, batch, 1, seed=7, directions=directions)[0]
    res = simulate(cfg, params, x, t, [sp], simulator, N, S, build_dir=tmp_path,
                   verilator_opt="-O1" if simulator == "verilator" else None)
    cmp = compare_with_golden(cfg, params, x, t, [sp], res, N, S)
    assert cmp.ok, f"{cmp.mismatch}"
    # The harness loads the batch and runs INFER before the step: a batch of one group is then held.
    assert res["infer_cycles"] == infer_cycles(cfg, N, S, batch)
    assert res["steps"][0]["cycles"] == train_step_cycles(cfg, N, S, batch, sp, loaded=batch <= S)
    return res


@pytest.mark.slow
@pytest.mark.parametrize("device", list(DEVICES))
def test_shipped_device_full_size_step_on_verilator(device, tmp_path, require_simulator):
    require_simulator("verilator")
    cfg, N, S = DEVICES[device]
    step_on("verilator", cfg, N, S, cfg.max_batch, cfg.max_directions, tmp_path)


@pytest.mark.slow
def test_largest_device_task_step_on_icarus(tmp_path, require_simulator):
    require_simulator("icarus")
    target = TARGETS["ulx3s-85f"]
    step_on("icarus", target.cfg, target.neuron_lanes, target.sample_lanes, 64, 4, tmp_path)
