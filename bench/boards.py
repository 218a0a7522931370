"""Boards: utilisation, post-route Fmax and training throughput of each board's default device, next to the
golden model and the float back-propagation reference on this CPU.

    python bench/boards.py [--boards ...] [--build-root build/boards] [--out docs/results/boards.md]

For each board: its build's report.json (built with `rfsnn build` unless --build-root already holds
one), the cycles of one mexican-hat training step (the task's first batch, batch 64, K = 4, central
differences) on the board's lanes, simulated on Verilator and checked bit-exact against the golden
model, and from those the training steps/s and samples/s at the post-route Fmax and at the clock the
board is built for. The CPU columns time 200 steps of `rfsnn train`'s golden and float-bp backends on
the same task and network as the board's device (bench/step_speed.py's method).
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


def step_cycles(cfg_dict: dict, N: int, S: int) -> int:
    from rfsnn.sim.learner_sim import compare_with_golden, simulate_runs

    cfg, params, x, t, sp, _ = task_step(TASK, device=cfg_dict)
    res = simulate_runs(cfg, [dict(params=params, x=x, t=t, steps=[sp])], "verilator", N, S, verilator_opt="-O2")
    run = res["runs"][0]
    cmp = compare_with_golden(cfg, params, x, t, [sp], {**run, "info": res["info"]}, N, S)
    if not cmp.ok:
        raise SystemExit(f"lanes {N}x{S}: the RTL step is not bit-exact: {cmp}")
    return run["steps"][0]["cycles"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--build-root", default="build/boards")
    p.add_argument("--cpu-steps", type=int, default=200)
    p.add_argument("--out", help="also write the table (markdown) here")
    a = p.parse_args(argv)
    root = Path(a.build_root)
    t0 = time.time()
    cpu: dict[str, dict] = {}  # per device configuration
    cycles: dict[tuple, int] = {}
    rows = []
    for name in a.boards:
        r = board_report(name, root)
        ok = r["fits"] and r["meets_timing"]
        key = (json.dumps(r["config"], sort_keys=True), r["neuron_lanes"], r["sample_lanes"])
        if ok and key not in cycles:
            print(f"{name}: simulating one step on lanes {r['neuron_lanes']}x{r['sample_lanes']} ...", file=sys.stderr,
                  flush=True)
            cycles[key] = step_cycles(r["config"], r["neuron_lanes"], r["sample_lanes"])
        cyc = cycles.get(key)
        if key[0] not in cpu:
            print(f"{name}: timing the CPU backends on its network ...", file=sys.stderr, flush=True)
            cpu[key[0]] = {b: 1e3 / time_backend(TASK, b, a.cpu_steps, r["config"]) for b in ("golden", "float-bp")}
        use = resource_use(r)
        batch = 64
        fmax, clock = r["fmax_mhz"], r["clock_mhz"]
        rows.append(
            f"| {name} | {r['device']} | {','.join(map(str, r['config']['layers']))}, T={r['config']['t_steps']}, "
            f"{r['neuron_lanes']}x{r['sample_lanes']} | {use['logic']} | {use['flip-flops']} | {use['block RAM']} | "
            f"{use['multipliers']} | "
            f"{fmax if fmax else '-'} | {clock:g} | {'yes' if ok else 'no: ' + ('does not fit' if not r['fits'] else 'misses timing')} | "
            + (f"{cyc:,} | {fmax * 1e6 / cyc:,.0f} | {batch * fmax * 1e6 / cyc:,.0f} | {clock * 1e6 / cyc:,.0f} |"
               if ok and cyc else "- | - | - | - |")
            + f" {cpu[key[0]]['golden']:,.0f} | {cpu[key[0]]['float-bp']:,.0f} |")
    head = ("| board | FPGA | device, lanes | LUT4 (ECP5) / logic cells (iCE40) | flip-flops | block RAM | "
            "multipliers / DSP | Fmax MHz | clock MHz | fits and meets timing | cycles / step | steps/s at Fmax | "
            "samples/s at Fmax | steps/s at the clock | golden steps/s (CPU) | float-bp steps/s (CPU) |\n"
            + "|---" * 16 + "|")
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
