"""`rfsnn` command line: train, predict, config."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _tuple_of_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 64 or 32,32, got {text!r}")


def cmd_train(a) -> int:
    from .train import settings_for, train

    s = settings_for(a.task, backend=a.backend, hidden=a.hidden, steps=a.steps, batch=a.batch,
                     directions=a.directions, sigma=a.sigma, lr=a.lr, seed=a.seed, t_steps=a.t_steps,
                     difference=a.difference, scope=a.scope, noise=a.noise)
    if a.no_stochastic_rounding:
        s.stochastic_rounding = False
    out = Path(a.out) if a.out else Path("runs") / f"{s.task}-{s.backend}-{time.strftime('%Y%m%d-%H%M%S')}"
    m = train(s, out=out, progress=not a.quiet)
    print(f"{m['task']} / {m['backend']}: {m['steps']} steps, {m['forward_passes']} forward passes, "
          f"{m['wall_s']:.1f} s, test relative L2 error {m['test_rel_l2']:.4f}")
    print(f"run folder: {out}  (metrics.json, weights.npz, prediction.png, loss.png)")
    return 0


def cmd_predict(a) -> int:
    from .dataset import validate_points
    from .train import load_run

    run = load_run(Path(a.run))
    x = np.load(a.input)
    if x.ndim == 1 and run.problem.dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != run.problem.dim:
        raise SystemExit(f"error: {a.input} holds an array of shape {x.shape}; "
                         f"{run.problem.name} takes (N, {run.problem.dim}) points {run.problem.coord_names}")
    validate_points(x, run.problem, what="input")
    y = run.predict(x.astype(np.float64))
    np.save(a.output, y)
    print(f"{len(y)} predictions from {a.run} ({run.s.backend}) written to {a.output}")
    return 0


def cmd_config(a) -> int:
    from .train import settings_for
    from .problems import get_problem

    s = settings_for(a.task)
    cfg = s.device_config(get_problem(a.task).dim)
    print(json.dumps({"device": cfg.to_dict(), "cost": cfg.cost(), "train_defaults": s.to_dict()}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKENDS
    from .train import TASK_DEFAULTS

    p = argparse.ArgumentParser(prog="rfsnn", description="Train spiking neural networks on chip by weight "
                                "perturbation: the golden model, float references, and (later) the RTL and boards.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network on a PDE task and write a run folder")
    t.add_argument("--task", choices=list(TASK_DEFAULTS), default="mexican-hat")
    t.add_argument("--backend", choices=BACKENDS, default="golden",
                   help="golden: the device's fixed-point arithmetic (default); float-*: references")
    t.add_argument("--steps", type=int, help="training steps (default: the task's)")
    t.add_argument("--batch", type=int, help="samples per step")
    t.add_argument("--directions", type=int, help="K perturbation directions per step")
    t.add_argument("--sigma", type=float, help="perturbation scale in weight units (e.g. 0.015625)")
    t.add_argument("--lr", type=float, help="learning rate (default depends on the backend's optimiser)")
    t.add_argument("--hidden", type=_tuple_of_ints, help="hidden layer widths, e.g. 64 or 32,32")
    t.add_argument("--t-steps", dest="t_steps", type=int, help="time steps per sample (a power of two)")
    t.add_argument("--difference", choices=["central", "forward"])
    t.add_argument("--scope", choices=["global", "layerwise"])
    t.add_argument("--noise", choices=["rademacher", "gauss4"])
    t.add_argument("--no-stochastic-rounding", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="run folder (default runs/<task>-<backend>-<time>)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="evaluate a trained run at arbitrary points")
    pr.add_argument("--run", required=True, help="run folder written by `rfsnn train`")
    pr.add_argument("--input", required=True, help=".npy array of shape (N, d) in the task's coordinates")
    pr.add_argument("--output", required=True, help=".npy file for the N predictions")
    pr.set_defaults(func=cmd_predict)

    c = sub.add_parser("config", help="print a task's default device configuration and its hardware cost")
    c.add_argument("--task", choices=list(TASK_DEFAULTS), default="mexican-hat")
    c.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
