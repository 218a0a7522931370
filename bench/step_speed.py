"""Step speed: milliseconds per training step of each backend on each task's default network and batch.

    python bench/step_speed.py [--steps 300] [--out docs/results/step_speed.md]

Times the backend's training steps alone (no test-grid evaluation), after 20 warm-up steps, in the runs
`rfsnn train` makes (a device's batches drawn from its training set, the float references' by the host). The golden model must stay within 3x of the float weight-perturbation
reference: integer exactness must not make it slow.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from rfsnn.host.backends import IN_PROCESS_BACKENDS as BACKENDS
from rfsnn.host.train import TASK_DEFAULTS, Run, lr_at, run_block, settings_for
from rfsnn.sim.contract.config import DeviceConfig


def time_backend(task: str, backend: str, steps: int, device: dict | None = None) -> float:
    """ms per training step; `device`: a DeviceConfig dict to train instead of the task's default network."""
    s = settings_for(task, backend=backend)
    if device is not None:
        s.use_device(DeviceConfig.from_dict(device))
    run = Run(s)
    lr = s.base_lr()
    run.attach_training_set()
    block = run_block(s, run.backend)  # the runs `rfsnn train` makes of the task default

    def train(first, count):
        for start in range(first, first + count, block):
            run.backend.train(start, min(block, first + count - start), lambda i: lr_at(s, lr, i))

    train(0, 20)
    t0 = time.perf_counter()
    train(20, steps)
    return (time.perf_counter() - t0) / steps * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default="docs/results/step_speed.md")
    a = p.parse_args(argv)
    header = ("| task | network | K | batch | " + " | ".join(f"{b} ms/step" for b in BACKENDS)
              + " | golden / float-wp |\n|---|---|---|---|" + "---|" * len(BACKENDS) + "---|")
    print(header, flush=True)
    lines = [header]
    for task in TASK_DEFAULTS:
        s = settings_for(task)
        ms = {b: time_backend(task, b, a.steps) for b in BACKENDS}
        line = (f"| {task} | {'x'.join(map(str, s.hidden))}, T={s.t_steps} | {s.directions} | {s.batch} | "
                + " | ".join(f"{ms[b]:.2f}" for b in BACKENDS) + f" | {ms['golden'] / ms['float-wp']:.2f} |")
        print(line, flush=True)
        lines.append(line)
    text = (f"# Training step speed\n\nMeasured with `python bench/step_speed.py --steps {a.steps}` on "
            f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
            f"NumPy {np.__version__}; one process.\n\n" + "\n".join(lines) + "\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
