"""Host link: utilisation of the UART and the share of training the device waits for data, per task's
default network and batch, at 3 and 12 Mbaud, with the training set on the device or streamed.

    python bench/link.py [--steps 3] [--run-steps 256] [--clock-mhz 48] [--out docs/results/link.md]

Measured on the virtual board (sim/virtual_board.py): the whole gateware, real UART, on Verilator,
driven through pyserial by the training backend exactly as `rfsnn train --backend serial` does, on the
task's real batches. Time is the simulator's: the harness reports the simulated time whenever the board
goes idle, and the learner counts its own busy cycles (counter cycles_busy). The simulation stands
still while the host thinks, so the figures are those of an infinitely fast host: wire time and
compute only, no USB latency. Three ways of driving:

- set on the device (what `rfsnn train` does when the set fits, docs/fixed-point.md section 7): the
  set is uploaded once (its wire time is the "set upload" column), then each run of --run-steps steps
  (the runs `rfsnn train` makes of a 20,000-step task default) is one TRAIN_STEPS request;
- streamed, pipelined (a set too large for the device): each step's frame is followed at once by the
  next step's batch, which waits in the device's receive FIFO while the step runs;
- streamed, stop-and-wait: the batch is sent, then the step, each waiting for its reply.

device wait = 1 - learner busy time / simulated time over the measured steps.
UART utilisation = bits on the wire (10 per byte) / (baud x simulated time), per direction.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path


from rfsnn.host.backends import LinkOptions, make_backend
from rfsnn.sim.contract.protocol import value_bytes
from rfsnn.host.train import TASK_DEFAULTS, Run, lr_at, settings_for
from rfsnn.sim.virtual_board import BoardSpec, VirtualBoard


class CountingSerial:
    """Wraps the backend's transport to count bytes each way."""

    def __init__(self, inner):
        self.inner, self.sent, self.received = inner, 0, 0

    def write(self, data):
        self.sent += len(data)
        self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        self.received += len(data)
        return data


def idle_time_ps(stats: Path) -> int:
    """The simulated time the board reported when it last went idle, once it has settled (the host has
    its last reply, so the board is idle or about to be)."""
    last = None
    while True:
        time.sleep(0.3)
        if stats.exists():
            now = int(stats.read_text())
            if now == last:
                return now
            last = now


DRIVING = ("set on the device", "streamed, pipelined", "streamed, stop-and-wait")


def measure(task: str, baud: int, clock_hz: float, steps: int, driving: str, build_root: Path) -> dict:
    s = settings_for(task, backend="serial")
    run = Run(settings_for(task))  # data and scaling (golden backend, not used for training)
    cfg = run.cfg
    board = BoardSpec(cfg, 1, 8, clock_hz, baud)
    stats = build_root / f"stats-{board.key()}"
    stats.unlink(missing_ok=True)
    with VirtualBoard.launch(board, build_root / board.key(), stats_file=stats,
                             on_status=lambda t: print(f"  {t}", file=sys.stderr, flush=True)) as vb:
        backend = make_backend("serial", cfg, s, s.seed, LinkOptions(port=vb.port, baud=baud, timeout=300))
        try:
            dev = backend.device
            line = CountingSerial(dev.t)
            dev.t = line
            if driving.endswith("stop-and-wait"):
                dev.window = 0
            lr = s.base_lr()
            t_before = idle_time_ps(stats)
            backend.attach(run.scaler.inputs(run.data.x_train), run.scaler.targets(run.data.u_train),
                           stream=driving != DRIVING[0])
            upload_s = (idle_time_ps(stats) - t_before) * 1e-12 if backend.resident else 0.0
            backend.train(0, 1, lambda i: lr)  # streamed: the first batch goes out alone; then each is there
            dev.clear_counters()
            t0 = idle_time_ps(stats)
            sent0, received0 = line.sent, line.received
            done = 1
            while done < steps + 1:
                count = min(backend.max_run, steps + 1 - done)
                backend.train(done, count, lambda i: lr_at(s, lr, i))
                done += count
            t1 = idle_time_ps(stats)
            sent, received = line.sent - sent0, line.received - received0
            busy_cycles = dev.counters()["cycles_busy"]
        finally:
            backend.close()
    sim_s = (t1 - t0) * 1e-12
    raw = (cfg.layers[0] + cfg.layers[-1]) * value_bytes(cfg)  # value bytes of one sample
    return {"task": task, "network": "-".join(map(str, cfg.layers)), "K": s.directions, "batch": s.batch,
            "baud": baud, "driving": driving, "steps": steps, "step_ms": sim_s / steps * 1e3,
            "busy_cycles_per_step": busy_cycles / steps, "wait": 1 - busy_cycles / clock_hz / sim_s,
            "util_up": sent * 10 / baud / sim_s, "util_down": received * 10 / baud / sim_s,
            "up_bytes_per_step": sent / steps, "down_bytes_per_step": received / steps,
            "overhead_per_sample": sent / steps / s.batch - raw, "raw_per_sample": raw, "upload_s": upload_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="measured steps per streamed row (after one warm-up step)")
    p.add_argument("--run-steps", type=int, default=256,
                   help="measured steps with the set on the device: one TRAIN_STEPS run of at most 256")
    p.add_argument("--clock-mhz", type=float, default=48.0,
                   help="the simulated clock (divisor 4 at 12 Mbaud needs 48 MHz)")
    p.add_argument("--bauds", type=int, nargs="+", default=[3_000_000, 12_000_000])
    p.add_argument("--tasks", nargs="+", default=list(TASK_DEFAULTS), choices=list(TASK_DEFAULTS))
    p.add_argument("--build-dir", help="where the virtual boards are built (default: a temporary folder)")
    p.add_argument("--out", help="also write the table (markdown) here")
    a = p.parse_args(argv)
    tmp = None if a.build_dir else tempfile.TemporaryDirectory(prefix="rfsnn-link-")
    root = Path(a.build_dir or tmp.name).resolve()
    rows = []
    for task in a.tasks:
        for baud in a.bauds:
            for driving in DRIVING:
                print(f"{task} at {baud / 1e6:g} Mbaud, {driving} ...", file=sys.stderr, flush=True)
                steps = a.run_steps if driving == DRIVING[0] else a.steps
                rows.append(measure(task, baud, a.clock_mhz * 1e6, steps, driving, root))
    head = (f"Clock {a.clock_mhz:g} MHz (simulated), lanes 1x8; `python bench/link.py --steps {a.steps} "
            f"--run-steps {a.run_steps} --clock-mhz {a.clock_mhz:g} --bauds {' '.join(map(str, a.bauds))}` on "
            f"{platform.machine()}, "
            f"Python {platform.python_version()}.\n\n"
            "| task | network, K, batch | Mbaud | driving | measured steps | ms/step | compute cycles/step | "
            "device waits | UART up / down | bytes up / down per step | set upload (once) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['task']} | {r['network']}, K={r['K']}, {r['batch']} | {r['baud'] / 1e6:g} | "
                     f"{r['driving']} | {r['steps']} | {r['step_ms']:.3f} | "
                     f"{r['busy_cycles_per_step']:,.0f} | {r['wait']:.1%} | {r['util_up']:.1%} / {r['util_down']:.1%} | "
                     f"{r['up_bytes_per_step']:.1f} / {r['down_bytes_per_step']:.1f} | "
                     + (f"{r['upload_s'] * 1e3:.0f} ms |" if r['upload_s'] else "- |"))
    table = "\n".join(lines)
    print(table)
    if a.out:
        Path(a.out).write_text("# Host link: utilisation and device wait\n\n" + (__doc__.split("\n\n", 2)[2]) + "\n"
                               + table + "\n")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
