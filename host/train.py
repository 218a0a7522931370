"""A training run: task data -> backend steps -> checkpoints -> a run folder.

Run folder: config.json (settings, device config, scaler), metrics.json, weights.npz, history.json,
prediction.png (prediction, reference, error) and loss.png; during the run, checkpoint.npz holds the
weights read back at the last checkpoint (with its step number), so a run whose device fails keeps them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfsnn.sim.config import ConfigError, DeviceConfig

from . import optim
from .backends import BACKENDS, DEVICE_BACKENDS, LinkOptions, make_backend
from .dataset import Dataset, Scaler
from .link import LinkError
from .problems import get_problem


@dataclass
class TrainSettings:
    """Everything that defines a run. Defaults per task come from TASK_DEFAULTS; the network, batch,
    directions and steps are shared by every backend so that runs compare fairly."""

    task: str = "mexican-hat"
    backend: str = "golden"
    hidden: tuple[int, ...] = (64,)
    t_steps: int = 16
    leak_shift: int = 3
    steps: int = 3000
    batch: int = 64
    directions: int = 4  # K
    sigma: float = 2.0**-6  # perturbation scale, real units (device: sigma * 2**w_frac LSBs)
    lr: float | None = None  # None: the backend's default (LR_DEFAULTS)
    lr_schedule: str = "cosine"  # constant | cosine | step (host.optim.lr_at)
    lr_floor: float = 0.05  # the cosine schedule ends at lr * lr_floor
    clip: float = 2.0**-9  # per-direction step limit, real weight units (golden; 8 LSBs at w_frac = 12)
    noise: str = "rademacher"
    difference: str = "central"
    scope: str = "global"
    stochastic_rounding: bool = True
    init_spread: float = 0.9  # std of layer-1 currents over the input box, in thresholds (floatnet.init_params)
    init_readout_gain: float = 1.0
    n_train: int = 4096
    seed: int = 0
    eval_every: int = 0  # 0: about 20 checkpoints per run
    # A whole device configuration (DeviceConfig dict) instead of the default widths for hidden/t_steps:
    # a board built with narrower registers (`rfsnn train --device-config build/boards/B/report.json`).
    device: dict | None = None

    def base_lr(self) -> float:
        """The learning rate the schedule starts from: --lr, or the backend's default."""
        return self.lr if self.lr is not None else LR_DEFAULTS[self.backend]

    def use_device(self, cfg: DeviceConfig) -> None:
        """Train this whole device configuration: its network, T and register widths."""
        self.device, self.hidden = cfg.to_dict(), tuple(cfg.layers[1:-1])
        self.t_steps, self.leak_shift = cfg.t_steps, cfg.leak_shift

    def device_config(self, n_in: int) -> DeviceConfig:
        layers = (n_in, *self.hidden, 1)
        if self.device is None:
            return DeviceConfig(layers=layers, t_steps=self.t_steps, leak_shift=self.leak_shift)
        cfg = DeviceConfig.from_dict(self.device)
        if (cfg.layers, cfg.t_steps, cfg.leak_shift) != (layers, self.t_steps, self.leak_shift):
            raise ConfigError(f"the device configuration is {'-'.join(map(str, cfg.layers))}, T={cfg.t_steps}, "
                              f"leak_shift={cfg.leak_shift}; this run needs {'-'.join(map(str, layers))}, "
                              f"T={self.t_steps}, leak_shift={self.leak_shift}")
        return cfg

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d


# Per-task defaults, chosen by measurement (docs/results/accuracy.md has the table and the command).
TASK_DEFAULTS: dict[str, dict] = {
    "mexican-hat": dict(hidden=(64,), steps=20000),
    "poisson1d": dict(hidden=(64,), steps=20000),
    "reaction-diffusion": dict(hidden=(64,), steps=30000, directions=8, lr_floor=0.02),
}
# The optimiser differs by backend (SGD for perturbation, Adam for back-propagated gradients),
# so the learning rate does too.
LR_DEFAULTS = {"golden": 0.08, "rtl": 0.08, "serial": 0.08, "float-wp": 0.08, "float-rfg": 3e-3, "float-bp": 3e-3}


def settings_for(task: str, **overrides) -> TrainSettings:
    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_DEFAULTS)}")
    merged = {**TASK_DEFAULTS[task], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainSettings(task=task, **merged)


def lr_at(s: TrainSettings, lr: float, step: int) -> float:
    return optim.lr_at(step, max(1, s.steps), lr, s.lr_schedule, s.lr_floor)


def rel_l2(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(pred - ref) / np.linalg.norm(ref))


class Run:
    """A backend, the data it trains on, and the scaling between the task and the device."""

    def __init__(self, s: TrainSettings, link: LinkOptions | None = None):
        if s.backend not in BACKENDS:
            raise ValueError(f"unknown backend {s.backend!r}; choose one of {', '.join(BACKENDS)}")
        self.s = s
        self.problem = get_problem(s.task)
        self.data = Dataset.make(self.problem, n_train=s.n_train, seed=s.seed)
        self.scaler = self.data.scaler
        self.cfg = s.device_config(self.problem.dim)
        self.backend = make_backend(s.backend, self.cfg, s, s.seed, link)

    def predict(self, x_task: np.ndarray) -> np.ndarray:
        """Model output in task units at task coordinates (N, d)."""
        y = self.backend.predict_dev(self.scaler.inputs(x_task))
        return self.scaler.outputs_to_task(np.asarray(y)[..., 0])

    def test_error(self) -> float:
        return rel_l2(self.predict(self.data.x_test), self.data.u_test)


def train(s: TrainSettings, out: Path | None = None, progress: bool = True, link: LinkOptions | None = None) -> dict:
    """Run the training loop; write the run folder if `out` is given; return the metrics. link: how to
    reach the device of the rtl and serial backends."""
    run = Run(s, link)
    try:
        return _train(run, out, progress)
    finally:
        run.backend.close()


def _train(run: Run, out: Path | None, progress: bool) -> dict:
    from tqdm import tqdm

    s = run.s
    lr0 = s.base_lr()
    every = s.eval_every or max(1, s.steps // 20)
    batches = run.data.batches(s.batch, np.random.default_rng([s.seed, 2]), drop_last=True)
    history = {"step": [], "loss": [], "eval_step": [], "test_rel_l2": []}
    t0 = time.perf_counter()
    bar = tqdm(range(s.steps), desc=f"{s.task}/{s.backend}", unit="step", disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    done, interrupted = 0, False
    upcoming = next(batches) if s.steps else None
    try:
        for i in bar:
            (xb, ub), upcoming = upcoming, (next(batches) if i + 1 < s.steps else None)
            ahead = None if upcoming is None else (run.scaler.inputs(upcoming[0]), run.scaler.targets(upcoming[1]))
            loss = run.backend.step(run.scaler.inputs(xb), run.scaler.targets(ub), lr_at(s, lr0, i), i, ahead)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {i}; lower --lr (now {lr0})")
            history["step"].append(i)
            history["loss"].append(loss)
            done = i + 1
            if done % every == 0 or done == s.steps:
                err = run.test_error()
                history["eval_step"].append(done)
                history["test_rel_l2"].append(err)
                bar.set_postfix(loss=f"{loss:.2e}", test_rel_l2=f"{err:.4f}")
                if out is not None:  # the weights, read back from the device
                    Path(out).mkdir(parents=True, exist_ok=True)
                    np.savez(Path(out) / "checkpoint.npz", step=done, **run.backend.weights_npz())
    except KeyboardInterrupt:  # keep what was trained: the run folder is still written, marked as cut short
        interrupted = True
        bar.close()
        print(f"interrupted after {done} of {s.steps} steps; writing the run so far", flush=True)
    except LinkError as e:  # the device link failed: say where the last weights are
        bar.close()
        if out is not None and history["eval_step"]:
            raise LinkError(f"{e} (at step {done}; the weights of step {history['eval_step'][-1]} are in "
                            f"{Path(out) / 'checkpoint.npz'})") from e
        raise
    wall = time.perf_counter() - t0
    pred = run.predict(run.data.x_test)
    metrics = {
        "task": s.task,
        "backend": s.backend,
        "steps": done,
        "steps_planned": s.steps,
        "interrupted": interrupted,
        "forward_passes": int(run.backend.forward_passes),
        "wall_s": round(wall, 2),
        "steps_per_s": round(done / wall, 1) if wall else 0.0,
        "test_rel_l2": rel_l2(pred, run.data.u_test),
        "final_train_loss": float(np.mean(history["loss"][-50:])) if done else None,
        "lr": lr0,
        "params": run.cfg.n_params,
        "counters": run.backend.counters(),
    }
    if out is not None:
        write_run(Path(out), run, metrics, history, pred)
    return metrics


def write_run(out: Path, run: Run, metrics: dict, history: dict, pred: np.ndarray) -> None:
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    config = {"settings": run.s.to_dict(), "device": run.cfg.to_dict(), "scaler": run.scaler.to_dict()}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "history.json").write_text(json.dumps(history))
    np.savez(out / "weights.npz", **run.backend.weights_npz())
    plots.prediction(out / "prediction.png", run.problem, run.data.x_test, pred, run.data.u_test,
                     title=f"{run.s.task} / {run.s.backend}: test rel. L2 {metrics['test_rel_l2']:.4f}")
    # Perturbation backends only ever evaluate perturbed networks; their batch loss includes the
    # perturbation's own cost, so it flattens while the test error still falls.
    perturbed = run.s.backend in (*DEVICE_BACKENDS, "float-wp")
    label = "batch loss at w +/- sigma v (MSE, device units)" if perturbed else "batch loss (MSE, device units)"
    plots.loss_curve(out / "loss.png", history, title=f"{run.s.task} / {run.s.backend}", loss_label=label)


def load_run(folder: Path) -> Run:
    """Rebuild a run from its folder, with its trained weights (bit-exact for the golden backend).

    A run trained on a device (rtl, serial) is evaluated by the golden model, which computes what the
    device computes, bit for bit; no board is needed to use its weights."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a run folder (no config.json)")
    config = json.loads((folder / "config.json").read_text())
    st = config["settings"]
    st["hidden"] = tuple(st["hidden"])
    if st["backend"] in DEVICE_BACKENDS:
        st["backend"] = "golden"
    run = Run(TrainSettings(**st))
    if run.cfg.to_dict() != config["device"]:
        raise ValueError(f"device config in {folder} differs from the one this version builds: "
                         f"{config['device']} vs {run.cfg.to_dict()}")
    run.scaler = Scaler.from_dict(config["scaler"])
    with np.load(folder / "weights.npz") as npz:
        run.backend.load_weights(npz)
    return run
