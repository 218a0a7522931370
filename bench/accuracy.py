"""Accuracy bench: train every backend on every task with the defaults; write a markdown table.

    python bench/accuracy.py [--seeds 0 1 2] [--tasks ...] [--backends ...] [--steps N] [--out docs/results/accuracy.md]

Runs one after another (so wall times are not inflated by a neighbour on a 2-core machine) and prints
the table as it fills. Each row is the median over the seeds of test relative L2 error (with the range)
and wall time; forward passes are per run.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from rfsnn.host.backends import IN_PROCESS_BACKENDS as BACKENDS
from rfsnn.host.train import TASK_DEFAULTS, settings_for, train

HEADER = ("| task | backend | network | steps | forward passes | wall time (s) | test rel. L2 (median) | range over seeds |\n"
          "|---|---|---|---|---|---|---|---|")


def row(task, backend, results, s):
    errs = [r["test_rel_l2"] for r in results]
    walls = [r["wall_s"] for r in results]
    layers = "x".join(str(h) for h in s.hidden)
    return (f"| {task} | {backend} | {layers}, T={s.t_steps} | {s.steps} | {results[0]['forward_passes']:,} | "
            f"{statistics.median(walls):.0f} | {statistics.median(errs):.4f} | "
            f"{min(errs):.4f}-{max(errs):.4f} ({len(errs)} seeds) |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASK_DEFAULTS), choices=list(TASK_DEFAULTS))
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, help="override every task's step budget (for quick looks)")
    p.add_argument("--out", default="docs/results/accuracy.md")
    a = p.parse_args(argv)

    lines = [HEADER]
    raw = []
    print(HEADER, flush=True)
    t_start = time.time()
    for task in a.tasks:
        for backend in a.backends:
            s = settings_for(task, backend=backend, steps=a.steps)
            results = []
            for seed in a.seeds:
                s.seed = seed
                m = train(s, out=None, progress=False)
                results.append(m)
                raw.append({k: m[k] for k in ("task", "backend", "steps", "forward_passes", "wall_s", "test_rel_l2")}
                           | {"seed": seed})
                print(f"  {task} {backend} seed {seed}: rel L2 {m['test_rel_l2']:.4f}, {m['wall_s']:.0f} s",
                      file=sys.stderr, flush=True)
            line = row(task, backend, results, s)
            lines.append(line)
            print(line, flush=True)
    cmd = "python bench/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"# Accuracy: every backend on every task, defaults\n\n"
            f"Measured with `{cmd.strip()}` on {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"{platform.python_implementation()} {platform.python_version()}; runs one after another; "
            f"total {(time.time() - t_start) / 60:.0f} min. Test relative L2 = ||u_pred - u|| / ||u|| on the task's test grid.\n\n"
            + "\n".join(lines) + "\n")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
