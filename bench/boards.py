"""Boards: utilisation, post-route Fmax and training throughput of each board's default device, next to the
golden model and the float back-propagation reference on this CPU.

    python bench/boards.py [--boards ...] [--build-root build/boards] [--out docs/results/boards.md]

For each board: its build's report.json (built with `rfsnn build` unless --build-root already holds
one), the cycles of one mexican-hat training step (the task's first batch, batch 64, K = 4, central
differences) on the board's lanes, simulated on Verilator, checked bit-exact against the golden model
and against the cycle model (sim/cycles.py), and from those the training steps/s and samples/s at the
post-route Fmax and at the clock the board is built for. "Runs with the link" is how `rfsnn train`
drives a board whose training set is on the device: runs of --run-steps TRAIN_STEPS steps, each a step's
batch draw and its TRAIN_STEP (the cycle model's train_steps_cycles), plus each run's request and reply
on the wire at the board's baud rate (their bytes counted on the golden backend's link, the same frames
a board gets; stop-and-wait, no host latency). Boards without a set stream each batch: that column is
then "-". The CPU columns time 200 steps of `rfsnn train`'s golden and float-bp backends on the same
task and network as the board's device (bench/step_speed.py's method); "x golden" is the runs' rate
over the golden model's.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from rtl_cycles import task_step  # noqa: E402
from step_speed import time_backend  # noqa: E402

from rfsnn.boards.build import BuildError, build, resource_use  # noqa: E402
from rfsnn.boards.targets import TARGETS  # noqa: E402

TASK = "mexican-hat"


def board_report(name: str, root: Path) -> dict:
    path = root / name / "report.json"
    if not path.exists():
        print(f"{name}: building ...", file=sys.stderr, flush=True)
        try:
            build(TARGETS[name], root / name, log=lambda t: print(f"  {t}", file=sys.stderr, flush=True))
        except BuildError as e:
            print(f"  {e}", file=sys.stderr, flush=True)
    return json.loads(path.read_text())


def step_cycles(cfg_dict: dict, N: int, S: int) -> tuple[int, int]:
    """Clocks of the step (measured, and equal to the cycle model's) and of one step of a TRAIN_STEPS run
    (its batch draw and that TRAIN_STEP, from the model)."""
    from rfsnn.sim.cycles import train_step_cycles, train_steps_cycles
    from rfsnn.sim.learner_sim import compare_with_golden, simulate_runs

    cfg, params, x, t, sp, _ = task_step(TASK, device=cfg_dict)
    res = simulate_runs(cfg, [dict(params=params, x=x, t=t, steps=[sp])], "verilator", N, S, verilator_opt="-O2")
    run = res["runs"][0]
    cmp = compare_with_golden(cfg, params, x, t, [sp], {**run, "info": res["info"]}, N, S)
    if not cmp.ok:
        raise SystemExit(f"lanes {N}x{S}: the RTL step is not bit-exact: {cmp}")
    measured, model = run["steps"][0]["cycles"], train_step_cycles(cfg, N, S, len(x), sp)
    if measured != model:
        raise SystemExit(f"lanes {N}x{S}: the step took {measured} cycles, the cycle model says {model}")
    return measured, train_steps_cycles(cfg, N, S, len(x), sp, 1)


def run_link_bytes(cfg_dict: dict, run_steps: int) -> int:
    """Bytes both ways on the link for one TRAIN_STEPS run of `run_steps` steps of the task's training, as
    `rfsnn train` sends it (counted on the golden backend, whose link carries the same frames)."""
    from link import CountingSerial

    from rfsnn.host.train import Run, lr_at, settings_for
    from rfsnn.sim.contract.config import DeviceConfig

    s = settings_for(TASK, backend="golden")
    s.use_device(DeviceConfig.from_dict(cfg_dict))
    run = Run(s)
    backend = run.backend
    backend.attach(run.scaler.inputs(run.data.x_train), run.scaler.targets(run.data.u_train))
    if not backend.resident:
        return 0
    line = CountingSerial(backend.device.t)
    backend.device.t = line
    lr = s.base_lr()
    backend.train(0, run_steps, lambda i: lr_at(s, lr, i))
    return line.sent + line.received


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--build-root", default="build/boards")
    p.add_argument("--cpu-steps", type=int, default=200)
    p.add_argument("--run-steps", type=int, default=256, help="steps per TRAIN_STEPS run (rfsnn train's runs)")
    p.add_argument("--out", help="also write the table (markdown) here")
    a = p.parse_args(argv)
    root = Path(a.build_root)
    t0 = time.time()
    cpu: dict[str, dict] = {}  # per device configuration
    cycles: dict[tuple, tuple[int, int]] = {}  # (a step's cycles, a TRAIN_STEPS step's)
    rows = []
    for name in a.boards:
        r = board_report(name, root)
        ok = r["fits"] and r["meets_timing"]
        key = (json.dumps(r["config"], sort_keys=True), r["neuron_lanes"], r["sample_lanes"])
        if ok and key not in cycles:
            print(f"{name}: simulating one step on lanes {r['neuron_lanes']}x{r['sample_lanes']} ...", file=sys.stderr,
                  flush=True)
            cycles[key] = step_cycles(r["config"], r["neuron_lanes"], r["sample_lanes"])
        cyc, run_cyc = cycles.get(key, (None, None))
        if key[0] not in cpu:
            print(f"{name}: timing the CPU backends on its network ...", file=sys.stderr, flush=True)
            cpu[key[0]] = {b: 1e3 / time_backend(TASK, b, a.cpu_steps, r["config"]) for b in ("golden", "float-bp")}
            cpu[key[0]]["link bytes"] = run_link_bytes(r["config"], a.run_steps)
        use = resource_use(r)
        batch = 64
        fmax, clock = r["fmax_mhz"], r["clock_mhz"]
        runs = "- | - |"
        link_bytes = cpu[key[0]]["link bytes"]
        if ok and cyc and link_bytes:
            run_s = a.run_steps * run_cyc / (clock * 1e6) + link_bytes * 10 / r["baud"]
            rate = a.run_steps / run_s
            runs = f"{rate:,.0f} | {rate / cpu[key[0]]['golden']:.1f} |"
        rows.append(
            f"| {name} | {r['device']} | {','.join(map(str, r['config']['layers']))}, T={r['config']['t_steps']}, "
            f"{r['neuron_lanes']}x{r['sample_lanes']} | {use['logic']} | {use['flip-flops']} | {use['block RAM']} | "
            f"{use['multipliers']} | "
            f"{fmax if fmax else '-'} | {clock:g} | {'yes' if ok else 'no: ' + ('does not fit' if not r['fits'] else 'misses timing')} | "
            + (f"{cyc:,} | {fmax * 1e6 / cyc:,.0f} | {batch * fmax * 1e6 / cyc:,.0f} | {clock * 1e6 / cyc:,.0f} |"
               if ok and cyc else "- | - | - | - |")
            + f" {runs} {cpu[key[0]]['golden']:,.0f} | {cpu[key[0]]['float-bp']:,.0f} |")
    head = ("| board | FPGA | device, lanes | LUT4 (ECP5) / logic cells (iCE40) | flip-flops | block RAM | "
            "multipliers / DSP | Fmax MHz | clock MHz | fits and meets timing | cycles / step | steps/s at Fmax | "
            "samples/s at Fmax | steps/s at the clock | steps/s at the clock, runs with the link | x golden | "
            "golden steps/s (CPU) | float-bp steps/s (CPU) |\n"
            + "|---" * 18 + "|")
    table = "\n".join([head] + rows)
    print(table)
    if a.out:
        Path(a.out).write_text(
            "# Boards: utilisation, Fmax and training throughput\n\n"
            f"`python bench/boards.py` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
            f"Python {platform.python_version()}; {(time.time() - t0) / 60:.0f} min. {TASK}, batch 64, K = 4, "
            "central differences; one step simulated on Verilator (bit-exact against the golden model); CPU "
            f"columns: {a.cpu_steps} steps of each backend, on the board's network, on this machine.\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
