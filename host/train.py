"""A training run: task data -> backend steps -> checkpoints -> a run folder (host/runfolder.py).

config.json is written when the run starts; checkpoint.npz at every checkpoint holds the weights read
back from the device and everything else the run needs to continue (step, the batch stream's state or
the float sampler's, optimiser state, history, counters), so a run that is killed, loses its
device or is stopped with Ctrl-C continues with `rfsnn train --resume RUN` to the very weights the
uninterrupted run would have reached. metrics.json is written last.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfsnn.sim.contract.config import ConfigError, DeviceConfig, forward_passes, register_limits

from . import optim
from .backends import BACKENDS, DEVICE_BACKENDS, LinkOptions, make_backend, sigma_lsb
from .dataset import Dataset, Scaler
from .inputs import InputError
from .link import LinkError
from .problems import get_problem
from .runfolder import CHECKPOINT, WEIGHTS, RunFolder, RunFolderError


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
    eval_every: int = 0  # steps between test-error evaluations; 0: automatic (eval_interval)
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


# ---- settings: every value checked before anything runs -----------------------------------------------
def _finite_positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_settings(s: TrainSettings, cfg: DeviceConfig, n_train: int) -> None:
    """Refuse (InputError, naming the option and what it accepts) any setting the run cannot use."""
    device = s.backend in DEVICE_BACKENDS
    limits = register_limits(cfg)  # what the device's registers take

    def refuse(option: str, value, accepted: str):
        raise InputError(f"{option} {value!r}: {accepted}")

    if not (_integer(s.steps) and s.steps >= 1):
        refuse("--steps", s.steps, "the number of training steps must be an integer >= 1")
    top = min(n_train, limits["batch"][1]) if device else n_train
    if not (_integer(s.batch) and 1 <= s.batch <= top):
        refuse("--batch", s.batch, f"samples per step must be in 1..{top}"
               + (f" (the device holds {cfg.max_batch})" if device and top == cfg.max_batch else ""))
    top = limits["directions"][1] if device else 1 << 16
    if not (_integer(s.directions) and 1 <= s.directions <= top):
        refuse("--directions", s.directions, f"K must be an integer in 1..{top}")
    if not _finite_positive(s.sigma):
        refuse("--sigma", s.sigma, "the perturbation scale must be a positive finite number, e.g. 0.015625")
    if device:
        lsb = 1.0 / (1 << cfg.w_frac)
        fewest, most = limits["sigma"]
        if not fewest * lsb <= s.sigma <= most * lsb:
            refuse("--sigma", s.sigma, f"the device perturbs by whole weight LSBs: sigma must be in "
                   f"[{fewest * lsb:g}, {most * lsb:g}] ({fewest} to {most} LSBs of 2**-{cfg.w_frac})")
    if s.lr is not None and not _finite_positive(s.lr):
        refuse("--lr", s.lr, "the learning rate must be a positive finite number")
    if s.lr_schedule not in optim.SCHEDULES:
        refuse("lr_schedule", s.lr_schedule, f"one of {', '.join(optim.SCHEDULES)}")
    if not (_finite_positive(s.lr_floor) and s.lr_floor <= 1):
        refuse("lr_floor", s.lr_floor, "a fraction in (0, 1]")
    if not _finite_positive(s.clip):
        refuse("clip", s.clip, "a positive finite step limit")
    if not (_integer(s.eval_every) and s.eval_every >= 0):
        refuse("--eval-every", s.eval_every, "an integer >= 1 (or 0: automatic)")
    if not (_integer(s.seed) and s.seed >= 0):
        refuse("--seed", s.seed, "an integer >= 0")
    for option, value, choices in (("--noise", s.noise, ("rademacher", "gauss4")),
                                   ("--difference", s.difference, ("central", "forward")),
                                   ("--scope", s.scope, ("global", "layerwise"))):
        if value not in choices:
            refuse(option, value, f"one of {', '.join(choices)}")
    if device:  # the learning rate must give a step gain the device can hold, all along the schedule
        from rfsnn.sim.contract.config import gain_for

        lr0 = s.base_lr()
        per_layer = s.directions / cfg.n_layers if s.scope == "layerwise" else s.directions
        for lr in (lr0, lr0 * s.lr_floor):
            try:
                gain_for(lr, sigma_lsb(s.sigma, cfg), s.batch, per_layer, s.difference == "central", cfg)
            except ConfigError as e:
                refuse("--lr", lr0, f"{e}; try a learning rate nearer the default {LR_DEFAULTS[s.backend]}")


def settings_from_record(d, where: str) -> TrainSettings:
    """The TrainSettings of a run folder's config.json "settings" entry."""
    if not isinstance(d, dict):
        raise RunFolderError(f"{where}: \"settings\" is not an object")
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise RunFolderError(f"{where}: unknown settings {', '.join(unknown)} (written by another version of rfsnn?)")
    d = dict(d)
    if not isinstance(d.get("hidden", []), list) or not all(_integer(n) and n >= 1 for n in d.get("hidden", [])):
        raise RunFolderError(f"{where}: \"hidden\" must be a list of positive integers, got {d.get('hidden')!r}")
    d["hidden"] = tuple(d.get("hidden", (64,)))
    if d.get("task") not in TASK_DEFAULTS:
        raise RunFolderError(f"{where}: unknown task {d.get('task')!r}")
    if d.get("backend") not in BACKENDS:
        raise RunFolderError(f"{where}: unknown backend {d.get('backend')!r}")
    return TrainSettings(**d)


def eval_interval(s: TrainSettings, n_test: int) -> int:
    """Steps between test-error evaluations: --eval-every, or about 20 per run but never so often that
    evaluating costs more than ~10% of the training work (one evaluation runs the whole test grid once,
    a step runs its batch once per forward pass). The training loop widens it further once it has timed
    an evaluation against the steps (a link moves more bytes per sample for an evaluation)."""
    if s.eval_every:
        return s.eval_every
    passes = forward_passes(s.directions, s.difference) if s.backend in (*DEVICE_BACKENDS, "float-wp") \
        else 3  # BPTT / RFG: about a forward and a backward
    cost_in_steps = n_test / (s.batch * passes)
    return max(1, math.ceil(s.steps / 20), math.ceil(10 * cost_in_steps))


# ---- a run ---------------------------------------------------------------------------------------------
class Run:
    """A backend, the data it trains on, and the scaling between the task and the device."""

    def __init__(self, s: TrainSettings, link: LinkOptions | None = None):
        if s.backend not in BACKENDS:
            raise ValueError(f"unknown backend {s.backend!r}; choose one of {', '.join(BACKENDS)}")
        self.s = s
        self.notes: list[str] = []  # what the user should know about how the settings were taken
        self.problem = get_problem(s.task)
        self.cfg = s.device_config(self.problem.dim)
        check_settings(s, self.cfg, s.n_train)
        if link is not None:
            link.validate()
        if s.backend in DEVICE_BACKENDS:  # record the sigma that runs: whole weight LSBs
            ran = sigma_lsb(s.sigma, self.cfg) / (1 << self.cfg.w_frac)
            if ran != s.sigma:
                self.notes.append(f"--sigma {s.sigma:g} runs as {ran:g} (whole weight LSBs of 2**-{self.cfg.w_frac})")
                s.sigma = ran
        self.data = Dataset.make(self.problem, n_train=s.n_train, seed=s.seed)
        self.scaler = self.data.scaler
        self.backend = make_backend(s.backend, self.cfg, s, s.seed, link)

    def attach_training_set(self) -> None:
        """Give the backend its training set in device units (a device with a set memory receives it)."""
        self.backend.attach(self.scaler.inputs(self.data.x_train), self.scaler.targets(self.data.u_train))

    def predict(self, x_task: np.ndarray) -> np.ndarray:
        """Model output in task units at task coordinates (N, d)."""
        y = self.backend.predict_dev(self.scaler.inputs(x_task))
        return self.scaler.outputs_to_task(np.asarray(y)[..., 0])

    def test_error(self) -> float:
        return rel_l2(self.predict(self.data.x_test), self.data.u_test)

    def record(self) -> dict:
        """config.json's content (RunFolder adds the run id)."""
        return {"settings": self.s.to_dict(), "device": self.cfg.to_dict(), "scaler": self.scaler.to_dict(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def weight_keys(self) -> list[str]:
        keys = [f"{k}{l}" for l in range(1, self.cfg.n_layers + 1) for k in ("W", "b")]
        if self.s.backend in DEVICE_BACKENDS:
            keys += [f"{k}_int" for k in keys]
        return keys


class Stop:
    """Ctrl-C (SIGINT) or SIGTERM during training: the run stops after the step in progress, so that
    what it writes is consistent; a second signal interrupts at once (the last checkpoint stays)."""

    def __init__(self):
        self.signal: int | None = None

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.signal is not None:
                raise KeyboardInterrupt
            self.signal = signum

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGINT)


def train(s: TrainSettings, out: Path | None = None, progress: bool = True, link: LinkOptions | None = None,
          force: bool = False, stop: Stop | None = None) -> dict:
    """Run the training loop; write the run folder if `out` is given; return the metrics. link: how to
    reach the device of the rtl and serial backends; force: replace a run already in `out`."""
    if out is not None:
        RunFolder.check_new(out, force)
    run = Run(s, link)
    _print_notes(run)
    try:
        folder = RunFolder.create(out, run.record(), force=force) if out is not None else None
        run.attach_training_set()
        return _train(run, folder, progress, None, stop or Stop())
    finally:
        run.backend.close()


def resume(out: Path, progress: bool = True, link: LinkOptions | None = None, stop: Stop | None = None) -> dict:
    """Continue the run in `out` from its last checkpoint (from step 0 if it has none) with the settings
    its config.json records; the result is what the uninterrupted run would have given."""
    folder = RunFolder(out)
    config = folder.config()
    m = folder.metrics()
    if m is not None and m.get("status") == "complete":
        raise RunFolderError(f"{out} is a complete run ({m.get('steps')} steps); nothing to resume")
    s = settings_from_record(config["settings"], str(folder.file("config.json")))
    run = Run(s, link)
    _print_notes(run)
    try:
        _check_matches(run, config, folder)
        state = None
        run.attach_training_set()
        if folder.exists(CHECKPOINT):
            arrays = _load_weights(run, folder, CHECKPOINT)
            state = folder.checkpoint_state(arrays)
            run.backend.load_state(state["backend"], arrays)
        folder.clean_temporaries()
        return _train(run, folder, progress, state, stop or Stop())
    finally:
        run.backend.close()


def _print_notes(run: Run) -> None:
    for n in run.notes:
        print(f"note: {n}", file=sys.stderr, flush=True)


def _check_matches(run: Run, config: dict, folder: RunFolder) -> None:
    if run.cfg.to_dict() != config["device"]:
        raise RunFolderError(f"the device configuration in {folder.file('config.json')} differs from the one this "
                             f"version of rfsnn builds for its settings: {config['device']} vs {run.cfg.to_dict()}")
    try:
        scaler = Scaler.from_dict(config["scaler"])
    except (ValueError, TypeError) as e:
        raise RunFolderError(f"{folder.file('config.json')}: its scaler is damaged ({e})") from None
    if scaler.to_dict() != run.scaler.to_dict():
        raise RunFolderError(f"{folder.file('config.json')}: the scaling it records differs from the task's data")
    run.scaler = scaler


def _load_weights(run: Run, folder: RunFolder, name: str) -> dict[str, np.ndarray]:
    """Put the weights of the run file `name` on the run's backend, refusing a file of another run, one
    that lacks a key, or weights the device cannot hold (NaN, inf, out of range); returns its arrays."""
    arrays = folder.load_npz(name, run.weight_keys())
    for k in run.weight_keys():
        a = arrays[k]
        if a.dtype.kind not in "iuf" or not np.all(np.isfinite(a)):
            raise RunFolderError(f"{folder.file(name)}: {k} holds non-finite values (NaN or inf); these weights "
                                 "cannot be used")
    try:
        run.backend.load_weights(arrays)
    except ValueError as e:
        raise RunFolderError(f"{folder.file(name)}: {e}") from None
    return arrays


def run_block(s: TrainSettings, backend) -> int:
    """Steps per run of a device: a device's run shares one learning rate, so the schedule is held in
    blocks of this many steps (about 64 blocks per run of training, at most MAX_RUN_STEPS); runs start at
    block boundaries, whatever the evaluations and checkpoints, so every device backend and every
    interruption trains the same bits. Float references follow the schedule step by step (1)."""
    return max(1, min(backend.max_run, s.steps // 64))


def _train(run: Run, folder: RunFolder | None, progress: bool, state: dict | None, stop: Stop) -> dict:
    from tqdm import tqdm

    s = run.s
    lr0 = s.base_lr()
    every = eval_interval(s, len(run.data.x_test))
    checkpoint_every = max(1, math.ceil(s.steps / 20))
    block = run_block(s, run.backend)

    def lr_of(i: int) -> float:
        return lr_at(s, lr0, i - i % block)

    history = {"step": [], "loss": [], "eval_step": [], "test_rel_l2": []}
    done, wall_before, resumed_at = 0, 0.0, []
    if state is not None:
        history, done, wall_before = state["history"], state["step"], state["wall_s"]
        resumed_at = state.get("resumed_at", []) + [done]
    last_ckpt = {"step": done, "time": time.monotonic()}
    first, eval_seconds = done, 0.0
    t0 = time.perf_counter()
    bar = tqdm(total=s.steps, initial=done, desc=f"{s.task}/{s.backend}", unit="step", disable=not progress,
               dynamic_ncols=True, mininterval=0.5)

    def checkpoint() -> None:
        backend_state, arrays = run.backend.state()
        folder.write_checkpoint(run.backend.weights_npz(), {
            "step": done, "steps_planned": s.steps, "history": history,
            "wall_s": wall_before + time.perf_counter() - t0, "backend": backend_state, "resumed_at": resumed_at,
        }, arrays)
        last_ckpt.update(step=done, time=time.monotonic())

    with stop.installed():
        try:
            while done < s.steps and stop.signal is None:
                count = min(block - done % block, s.steps - done)
                entries = run.backend.train(done, count, lr_of)
                for i, loss in entries:
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"the loss became {loss} at step {i}; lower --lr (now {lr0})")
                    history["step"].append(i)
                    history["loss"].append(loss)
                done += count
                bar.update(count)
                if done // every > (done - count) // every or done == s.steps:  # a multiple of `every` passed
                    t_eval = time.perf_counter()
                    err = run.test_error()
                    t_eval = time.perf_counter() - t_eval
                    eval_seconds += t_eval
                    if not s.eval_every:  # measured: evaluations take at most ~10% of the run
                        per_step = (time.perf_counter() - t0 - eval_seconds) / (done - first)
                        every = max(every, math.ceil(10 * t_eval / max(per_step, 1e-9)))
                    history["eval_step"].append(done)
                    history["test_rel_l2"].append(err)
                    bar.set_postfix(loss=f"{entries[-1][1]:.2e}", test_rel_l2=f"{err:.4f}")
                if folder is not None and done < s.steps and (
                        done - last_ckpt["step"] >= checkpoint_every or time.monotonic() - last_ckpt["time"] > 60):
                    checkpoint()
        except LinkError as e:  # the device link failed: say where the last weights are, and how to go on
            bar.close()
            if folder is None:
                raise
            where = (f"the weights of step {last_ckpt['step']} are in {folder.file(CHECKPOINT)}"
                     if folder.exists(CHECKPOINT) else "no checkpoint was written yet")
            raise LinkError(f"link failed at step {done}: {e}; {where}; continue with "
                            f"`rfsnn train --resume {folder.path}`") from e
        bar.close()
        interrupted = done < s.steps
        if interrupted:
            print(f"stopped after {done} of {s.steps} steps; writing the run so far (continue it with "
                  f"`rfsnn train --resume {folder.path if folder else 'RUN'}`)", flush=True)
            if folder is not None:
                checkpoint()
        wall = wall_before + time.perf_counter() - t0
        pred = run.predict(run.data.x_test)
        metrics = {
            "task": s.task,
            "backend": s.backend,
            "status": "interrupted" if interrupted else "complete",
            "steps": done,
            "steps_planned": s.steps,
            "interrupted": interrupted,
            "resumed_at": resumed_at,
            "forward_passes": int(run.backend.forward_passes),
            "wall_s": round(wall, 2),
            "steps_per_s": round(done / wall, 1) if wall else 0.0,
            "test_rel_l2": rel_l2(pred, run.data.u_test),
            "final_train_loss": final_train_loss(history, done),
            "batches": "device" if getattr(run.backend, "resident", False) else "host",
            "lr": lr0,
            "eval_every": every,
            "params": run.cfg.n_params,
            "counters": run.backend.counters(),
        }
        if folder is not None:
            write_run(folder, run, metrics, history, pred)
    return metrics


def final_train_loss(history: dict, done: int) -> float | None:
    """The mean batch loss over the last 50 steps (or the last entry, where a device reports runs)."""
    if not history["loss"]:
        return None
    steps, loss = np.asarray(history["step"]), np.asarray(history["loss"])
    recent = steps >= done - 50
    return float(np.mean(loss[recent])) if recent.any() else float(loss[-1])


def write_run(folder: RunFolder, run: Run, metrics: dict, history: dict, pred: np.ndarray) -> None:
    """The final files, each atomically; metrics.json last, so that its presence means the rest is there."""
    from . import plots

    folder.write_weights(run.backend.weights_npz())
    folder.write_history(history)
    plots.prediction(folder.file("prediction.png"), run.problem, run.data.x_test, pred, run.data.u_test,
                     title=f"{run.s.task} / {run.s.backend}: test rel. L2 {metrics['test_rel_l2']:.4f}")
    # Perturbation backends only ever evaluate perturbed networks; their batch loss includes the
    # perturbation's own cost, so it flattens while the test error still falls.
    perturbed = run.s.backend in (*DEVICE_BACKENDS, "float-wp")
    label = "batch loss at w +/- sigma v (MSE, device units)" if perturbed else "batch loss (MSE, device units)"
    plots.loss_curve(folder.file("loss.png"), history, title=f"{run.s.task} / {run.s.backend}", loss_label=label)
    folder.write_metrics(metrics)


def load_run(path: Path, notes: list[str] | None = None) -> Run:
    """Rebuild a run from its folder with its trained weights (bit-exact for the golden backend): the
    final weights.npz, or for a run that did not finish (killed, device lost) its last checkpoint,
    which `notes` then mentions.

    A run trained on a device (rtl, serial) is evaluated by the golden model, which computes what the
    device computes, bit for bit; no board is needed to use its weights."""
    folder = RunFolder(path)
    config = folder.config()
    where = str(folder.file("config.json"))
    s = settings_from_record(config["settings"], where)
    if s.backend in DEVICE_BACKENDS:
        s.backend = "golden"
    run = Run(s)
    _check_matches(run, config, folder)
    metrics = folder.metrics()
    if folder.exists(WEIGHTS):
        source = WEIGHTS
        if metrics is None or metrics.get("status") != "complete":
            (notes if notes is not None else []).append(
                f"{path} is not a complete run ({'interrupted' if metrics else 'no metrics.json'}); "
                f"using its {WEIGHTS}" + (f" of step {metrics['steps']}" if metrics else ""))
    elif folder.exists(CHECKPOINT):
        source = CHECKPOINT
    else:
        raise RunFolderError(f"{path} holds no weights yet: the run stopped before its first checkpoint; "
                             f"continue it with `rfsnn train --resume {path}`")
    arrays = _load_weights(run, folder, source)
    if source == CHECKPOINT and notes is not None:
        step = folder.checkpoint_state(arrays).get("step")
        notes.append(f"{path} did not finish; using its last checkpoint (step {step} of {s.steps})")
    return run
