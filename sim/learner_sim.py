"""The Learner's exported Verilog on Icarus or Verilator, next to the golden model.

    res = simulate(cfg, params, x, t, steps, simulator="icarus", neuron_lanes=1, sample_lanes=8)
    cmp = compare_with_golden(cfg, params, x, t, steps, res)
    print(cmp)                      # "bit-exact", or the first mismatch with both values

`simulate` builds rtl.learner.Learner, writes a job file, runs the cocotb testbench
rfsnn.sim.cocotb.tb_learner through rtlsim.run and returns what the device reported: the INFO readback,
the loss and outputs of one INFER before training, and per training step the losses, scalar steps,
cycles (Counter.CYCLES_LAST), the weights read back, the counters (cleared before each step) and the
wall-clock seconds the simulator spent inside the TRAIN_STEP command alone.

`ideal_cycles` is the one definition of the work a step needs, shared by `rfsnn sim`, the benchmark
(bench/rtl_cycles.py) and the tests; its docstring states it.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract.commands import Op
from .contract.config import MAX_RUN_STEPS, DeviceConfig, StepParams, forward_passes
from .golden import GoldenModel, StepResult

TOPLEVEL = "learner"
TEST_MODULE = "rfsnn.sim.cocotb.tb_learner"


# ---- the work of a step ------------------------------------------------------------------------------
def n_passes(sp: StepParams) -> int:
    """Forward passes over the batch in one training step: 2K (central) or K + 1 (forward)."""
    return forward_passes(sp.directions, sp.difference)


def sample_work(cfg: DeviceConfig) -> int:
    """Lane operations of one sample in one forward pass, without the event-driven synaptic additions:
    n1 (n0 + 1) input multiply-accumulates (the first hidden layer's spikes are then a table lookup of the
    current, docs/fixed-point.md section 2, so it needs no time loop) + T sum(hidden beyond the first) LIF
    updates and as many bias additions + nL (n_{L-1} + 1) readout multiply-accumulates."""
    L, T = cfg.layers, cfg.t_steps
    deeper = L[2:-1]
    return L[1] * (L[0] + 1) + 2 * T * sum(deeper) + L[-1] * (L[-2] + 1)


def event_work(cfg: DeviceConfig, spikes: list[int]) -> int:
    """Event-driven synaptic additions into hidden layers beyond the first: sum over l >= 2 of
    spikes(layer l-1) x n_l, with `spikes` per hidden layer summed over samples and passes (zero for one
    hidden layer; the spikes of the last hidden layer feed the readout, which works from spike counts)."""
    hidden = cfg.layers[1:-1]
    return sum(int(spikes[h - 1]) * hidden[h] for h in range(1, len(hidden)))


def ideal_cycles(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, sp: StepParams,
                 spikes: list[int]) -> float:
    """Clock cycles a training step needs if every one of the P = neuron_lanes x sample_lanes lanes did
    useful work on every clock.

    Per sample and per forward pass the work is
        n1 (n0 + 1)                      input-layer multiply-accumulates (bias included); the first
                                         hidden layer's spikes follow from its current by table
      + event-driven synaptic additions  of hidden layers beyond the first: spikes of layer l-1 x n_l,
                                         plus T n_l bias additions and T n_l LIF updates (zero for one
                                         hidden layer)
      + nL (n_{L-1} + 1)                 readout multiply-accumulates.
    Ideal cycles per step = passes x batch x that / P + n_params / P (the update pass, P weights per
    clock), with passes = 2K (central differences) or K + 1 (forward differences). `spikes` is the
    golden model's Counters.spikes of the step (per hidden layer, summed over the step's passes and the
    batch), so the event term is summed over passes and samples already. Work efficiency = ideal / measured
(step_figures).
    """
    P = neuron_lanes * sample_lanes
    work = n_passes(sp) * batch * sample_work(cfg) + event_work(cfg, spikes)
    return (work + cfg.n_params) / P


def multiplies(cfg: DeviceConfig, batch: int, sp: StepParams) -> int:
    """Multiplies a training step needs: per sample and pass n1 n0 input weights times inputs and
    nL n_{L-1} readout weights times spike counts (the biases are additions)."""
    L = cfg.layers
    return n_passes(sp) * batch * (L[1] * L[0] + L[-1] * L[-2])


def step_figures(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, sp: StepParams,
                 spikes: list[int], cycles: int) -> dict[str, float | None]:
    """How busy the array was in a step of `cycles` clocks (docs/rtl.md, "How busy the array is"), over
    P = neuron_lanes x sample_lanes lanes:
    - work_efficiency: the work-optimal ideal (ideal_cycles: each necessary operation once, P per clock)
      over the cycles;
    - lane_occupancy: the clocks in which the lanes execute an operation (sim.cycles.lane_clocks) over the
      cycles; None beyond one hidden layer, where the event replay's clocks follow the spikes;
    - multiplier_occupancy: the step's multiplies (`multiplies`) over P lane multipliers x the cycles."""
    from .cycles import lane_clocks

    P = neuron_lanes * sample_lanes
    return {"work_efficiency": ideal_cycles(cfg, neuron_lanes, sample_lanes, batch, sp, spikes) / cycles,
            "lane_occupancy": (lane_clocks(cfg, neuron_lanes, sample_lanes, batch, sp) / cycles
                               if cfg.n_layers == 2 else None),
            "multiplier_occupancy": multiplies(cfg, batch, sp) / (P * cycles)}


def format_figures(figures: dict[str, float | None]) -> str:
    lanes = figures["lane_occupancy"]
    return (f"work efficiency {figures['work_efficiency']:.2f}, lane occupancy "
            f"{'-' if lanes is None else f'{lanes:.2f}'}, multiplier occupancy {figures['multiplier_occupancy']:.2f}")


def rough_cycles(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, passes: int) -> int:
    """A generous bound on the cycles of one training step of the current gateware (a hang detector:
    several times what the sequencer should take, not a model of it)."""
    N, S = neuron_lanes, sample_lanes
    L, T = cfg.layers, cfg.t_steps
    groups = math.ceil(batch / S)
    per_group = sum(math.ceil(o / N) * (i + 1) for o, i in cfg.layer_shapes) + T * sum(
        math.ceil(n / N) for n in L[1:-1]) + L[-1] * (S + 2) * 2 + 16 + T * sum(L[1:-1]) * max(L[1:-1])
    update = cfg.n_params * (4 + max(cfg.max_directions, cfg.step_frac))
    draw = 4 * sum(o + i + 1 for o, i in cfg.layer_shapes)
    return passes * (groups * per_group + draw + 16) + update


def firing_rates(cfg: DeviceConfig, params, x) -> list[float]:
    """Mean firing rate (spikes per neuron per time step, over the batch) of each hidden layer (golden)."""
    g = GoldenModel(cfg)
    g.infer(params, x)
    return [s / (len(x) * cfg.t_steps * n) for s, n in zip(g.counters.spikes, cfg.layers[1:-1])]


def make_steps(cfg: DeviceConfig, batch: int, n: int, seed: int = 0, directions: int = 4, noise: str = "rademacher",
               difference: str = "central", scope: str = "global", stochastic_rounding: bool = True,
               lr: float = 0.01, sigma: float = 2.0**-6, clip: float = 2.0**-9) -> list[StepParams]:
    """n training steps as the golden backend sends them: seeds from `seed`, the gain from gain_for (lr
    is the float learning rate; layer-wise scope divides K by the number of layers), sigma and clip in
    real weight units (the training defaults: 2^-6 and 2^-9), layer_start advancing by K per step."""
    from .contract.config import gain_for

    rng = np.random.default_rng([seed, 0x5EED])
    sigma_lsb = max(1, int(round(sigma * (1 << cfg.w_frac))))
    clip_q = min(cfg.step_range[1], int(round(clip * (1 << (cfg.w_frac + cfg.step_frac)))))
    per_layer = directions / cfg.n_layers if scope == "layerwise" else directions
    mant, shift = gain_for(lr, sigma_lsb, batch, per_layer, difference == "central", cfg)
    return [StepParams(seed=int(rng.integers(1 << 32)), directions=directions, sigma=sigma_lsb, gain_mant=mant,
                       gain_shift=shift, clip=clip_q, noise=noise, difference=difference, scope=scope,
                       layer_start=(i * directions) % cfg.n_layers, stochastic_rounding=stochastic_rounding)
            for i in range(n)]


# ---- running the Verilog ----------------------------------------------------------------------------
def _run_job(cfg, runs, simulator, neuron_lanes, sample_lanes, build_dir, timeout_cycles=None,
             verilator_opt=None, quiet=True, script=None) -> dict:
    from rfsnn.rtl.learner import Learner

    from . import rtlsim

    rtlsim.find_simulator(simulator)  # SimulatorMissing before any work
    for run in runs:
        for sp in run["steps"]:
            sp.validate(cfg)
    if timeout_cycles is None:
        worst = max([n_passes(sp) for run in runs for sp in run["steps"]] + [1])
        timeout_cycles = 20 * rough_cycles(cfg, neuron_lanes, sample_lanes, cfg.max_batch, worst) + 100_000
    job = {"config": cfg.to_dict(), "neuron_lanes": neuron_lanes, "sample_lanes": sample_lanes,
           "timeout_cycles": int(timeout_cycles),
           "runs": [{"params": [np.asarray(p, np.int64).tolist() for p in run["params"]],
                     "x": np.asarray(run["x"], np.int64).tolist(), "t": np.asarray(run["t"], np.int64).tolist(),
                     "steps": [sp.to_dict() for sp in run["steps"]]} for run in runs]}
    if script is not None:
        job["script"] = [[int(v) for v in c] for c in script]
    tmp = None
    if build_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"rfsnn-{simulator}-")
        build_dir = tmp.name
    build_dir = Path(build_dir).resolve()
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        job_path, res_path = build_dir / "job.json", build_dir / "results.json"
        job_path.write_text(json.dumps(job))
        for old in (res_path, build_dir / "sim.log", build_dir / "build.log"):
            old.unlink(missing_ok=True)
        t0 = time.perf_counter()
        dut = Learner(cfg, neuron_lanes, sample_lanes)
        try:
            rtlsim.run(dut, TOPLEVEL, TEST_MODULE, simulator, build_dir=build_dir,
                       extra_env={"RFSNN_JOB": str(job_path), "RFSNN_RESULTS": str(res_path)},
                       verilator_opt=verilator_opt, quiet=quiet, ports_only=True)
        except (AssertionError, RuntimeError) as e:  # a failed cocotb test, or a failed build
            detail = None
            if res_path.exists():
                detail = json.loads(res_path.read_text()).get("error")
            log = ""
            for name in ("sim.log", "build.log"):
                if quiet and (build_dir / name).exists():
                    tail = (build_dir / name).read_text(errors="replace").splitlines()[-25:]
                    log = f"\nlast lines of {name}:\n" + "\n".join(tail)
                    break
            raise RuntimeError(f"RTL simulation on {simulator} failed: {detail or e}{log}") from None
        results = json.loads(res_path.read_text())
        results["total_seconds"] = time.perf_counter() - t0
        # Verilog export, build and simulator start-up: everything but the testbench's own run
        results["build_seconds"] = results["total_seconds"] - results["wall_seconds"]
    finally:
        if tmp is not None:
            tmp.cleanup()
    results.update(simulator=simulator, neuron_lanes=neuron_lanes, sample_lanes=sample_lanes,
                   verilator_opt=verilator_opt)
    return results


def simulate(cfg: DeviceConfig, params, x, t, steps: list[StepParams], simulator: str = "icarus",
             neuron_lanes: int = 1, sample_lanes: int = 8, build_dir=None, verilator_opt: str | None = None) -> dict:
    """One run (load, INFER, then each step) on the exported Verilog. Returns a dict:
    info {config, neuron_lanes, sample_lanes}, infer_loss, y (B x nL), and steps: one dict
    per step with losses, steps, cycles, seconds (simulator wall clock inside TRAIN_STEP), counters
    {cycles_busy, cycles_last, spike_fanout, spikes0...} and params (the weights read back).
    Also infer_cycles, load_seconds, commands, build_seconds (export, build, start-up), total_seconds and
    wall_seconds (the testbench). verilator_opt: e.g. "-O0", a faster build and a slower run."""
    res = simulate_runs(cfg, [dict(params=params, x=x, t=t, steps=steps)], simulator, neuron_lanes,
                        sample_lanes, build_dir, verilator_opt)
    out = dict(res)
    out.update(out.pop("runs")[0])
    return out


def simulate_runs(cfg: DeviceConfig, runs: list[dict], simulator: str = "icarus", neuron_lanes: int = 1,
                  sample_lanes: int = 8, build_dir=None, verilator_opt: str | None = None) -> dict:
    """Several runs (dicts of params, x, t, steps) on one build and one simulator process: the device is
    reloaded between runs. Returns {"info", "runs": [per-run results as in `simulate`], ...}."""
    return _run_job(cfg, runs, simulator, neuron_lanes, sample_lanes, build_dir, verilator_opt=verilator_opt)


def simulate_script(cfg: DeviceConfig, script, simulator: str = "icarus", neuron_lanes: int = 1, sample_lanes: int = 8,
                    build_dir=None, verilator_opt: str | None = None) -> list[tuple[int, int]]:
    """Raw commands (op, index, data) on the exported Verilog, from reset, in order: each one's
    (status, data), as GoldenDevice.execute answers (tests/test_command_conformance.py)."""
    # a hang detector: a TRAIN_STEPS of the script's most steps, each at the largest step
    steps = max([d for op, _, d in script if op == Op.TRAIN_STEPS and 1 <= d <= MAX_RUN_STEPS] + [1])
    step = rough_cycles(cfg, neuron_lanes, sample_lanes, cfg.max_batch, 2 * cfg.max_directions)
    timeout = 20 * steps * step + 100_000
    res = _run_job(cfg, [], simulator, neuron_lanes, sample_lanes, build_dir, timeout, verilator_opt, script=script)
    return [tuple(r) for r in res["script"]]


# ---- comparison -------------------------------------------------------------------------------------
@dataclass
class Comparison:
    mismatch: str | None = None  # the first difference, in words, with both values
    golden: list[StepResult] = field(default_factory=list)  # the golden model's result of each step compared
    golden_params: list[list[np.ndarray]] = field(default_factory=list)  # weights after each step

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    def __str__(self) -> str:
        return "bit-exact" if self.ok else f"MISMATCH: {self.mismatch}"


def _first_diff(a, b) -> tuple | None:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return ("shape", a.shape, b.shape)
    bad = np.argwhere(a != b)
    if not len(bad):
        return None
    i = tuple(int(v) for v in bad[0])
    return (i, int(a[i]), int(b[i]))


def compare_with_golden(cfg: DeviceConfig, params, x, t, steps: list[StepParams], results: dict,
                        neuron_lanes: int | None = None, sample_lanes: int | None = None) -> Comparison:
    """Replay the run on GoldenModel; report "bit-exact" or the first mismatch.

    Checked in this order: the INFO readback (configuration and lanes, when given), the INFER outputs
    y[b, o] and loss, then per step k: the losses of each pass p, the scalar step of each direction, the
    weights (layer, row, col) read back, and the spike counter of each hidden layer and the synaptic-op
    counter. `results` is what `simulate` returned (or one entry of simulate_runs' "runs" plus "info").
    """
    cmp = Comparison()
    info = results.get("info")
    if info is not None:
        if info["config"] != cfg.to_dict():
            d = {k: (info["config"].get(k), v) for k, v in cfg.to_dict().items() if info["config"].get(k) != v}
            cmp.mismatch = f"INFO config: device (rtl, expected) differs in {d}"
            return cmp
        for name, want in (("neuron_lanes", neuron_lanes), ("sample_lanes", sample_lanes)):
            if want is not None and info[name] != want:
                cmp.mismatch = f"INFO {name}: rtl {info[name]} expected {want}"
                return cmp
    g = GoldenModel(cfg)
    x, t = np.asarray(x, np.int64), np.asarray(t, np.int64)
    y = g.infer(params, x)
    d = _first_diff(results["y"], y)
    if d:
        cmp.mismatch = (f"INFER output y{list(d[0])}: rtl {d[1]} golden {d[2]}" if d[0] != "shape"
                        else f"INFER outputs: rtl shape {d[1]} golden {d[2]}")
        return cmp
    loss = g.loss(params, x, t)
    if results["infer_loss"] != loss:
        cmp.mismatch = f"INFER loss: rtl {results['infer_loss']} golden {loss}"
        return cmp
    p = [np.asarray(a, np.int64) for a in params]
    if len(results["steps"]) != len(steps):
        cmp.mismatch = f"the device reported {len(results['steps'])} steps of {len(steps)}"
        return cmp
    for n, (sp, r) in enumerate(zip(steps, results["steps"])):
        p, res = g.train_step(p, x, t, sp)
        cmp.golden.append(res)
        cmp.golden_params.append(p)
        where = f"step {n}"
        if len(r["losses"]) != len(res.losses):
            cmp.mismatch = f"{where}: rtl reported {len(r['losses'])} losses, golden {len(res.losses)}"
            return cmp
        for i, (a, b) in enumerate(zip(r["losses"], res.losses)):
            if a != b:
                cmp.mismatch = f"{where}: loss of pass {i}: rtl {a} golden {b}"
                return cmp
        for k, (a, b) in enumerate(zip(r["steps"], res.steps)):
            if a != b:
                cmp.mismatch = f"{where}: scalar step of direction {k}: rtl {a} golden {b}"
                return cmp
        for l, (a, b) in enumerate(zip(r["params"], p)):
            d = _first_diff(a, b)
            if d:
                cmp.mismatch = (f"{where}: weight (layer {l}, row {d[0][0]}, col {d[0][1]}): rtl {d[1]} golden {d[2]}"
                                if d[0] != "shape" else f"{where}: layer {l} shape: rtl {d[1]} golden {d[2]}")
                return cmp
        for h, b in enumerate(res.counters.spikes):
            a = r["counters"].get(f"spikes{h}")
            if a != b:
                cmp.mismatch = f"{where}: spike counter of hidden layer {h}: rtl {a} golden {b}"
                return cmp
        if r["counters"]["spike_fanout"] != res.counters.spike_fanout:
            cmp.mismatch = (f"{where}: spike fan-out counter: rtl {r['counters']['spike_fanout']} "
                            f"golden {res.counters.spike_fanout}")
            return cmp
    return cmp
