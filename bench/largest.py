"""Boards: the largest network that fits each board and meets its clock, by building it.

    python bench/largest.py [--boards icebreaker ulx3s-12f ...] [--hidden 128 256 ...] [--minutes 25]
                            [--build-root build/largest] [--out docs/results/largest.md]
    python bench/largest.py --boards ulx3s-12f --networks 2,64,64,1 2,128,128,1 [--t-steps 32]

For each board, the board's default device with one hidden layer made wider, step by step (--hidden,
or the board's ladder below), each built with `rfsnn build` (YoWASP yosys and nextpnr) at the board's
clock; the search stops at the first width that does not fit, misses timing, or is not built within
--minutes (place-and-route of a nearly full ECP5 takes longer than the build of its default). The
table gives every width tried, with its logic, block RAM, Fmax and verdict. The hidden width is what
grows the device: the logic is nearly the same for any width, block RAM grows with it, and so does
the routing. --networks tries whole layer lists instead (more hidden layers add the event-driven
layer logic), and --t-steps another T; each of those is built on its own, without stopping.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from rfsnn.boards.build import resource_use
from rfsnn.boards.targets import TARGETS

LADDER = {"icebreaker": [16, 32, 64, 128, 256], "ulx3s-12f": [64, 128, 256, 512], "ulx3s-25f": [64, 128, 256, 512],
          "ulx3s-45f": [64, 128, 256, 512, 1024], "ulx3s-85f": [64, 128, 256, 512, 1024],
          "orangecrab-25f": [64, 128, 256, 512]}


def try_network(board: str, layers: tuple[int, ...], t_steps: int, root: Path, minutes: float) -> dict:
    target = TARGETS[board]
    cfg = dataclasses.replace(target.cfg, layers=layers, t_steps=t_steps)
    out = root / f"{board}-{'-'.join(map(str, layers))}-T{t_steps}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "device.json").write_text(cfg.to_json())
    cmd = [sys.executable, "-m", "rfsnn.host.cli", "build", "--board", board, "--config", str(out / "device.json"),
           "--out", str(out)]
    t0 = time.time()
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        return {"verdict": f"not built in {minutes:g} min", "seconds": time.time() - t0}
    report = out / "report.json"
    if not report.exists():
        return {"verdict": "build failed before place-and-route", "seconds": time.time() - t0}
    r = json.loads(report.read_text())
    verdict = "fits, meets timing" if r["fits"] and r["meets_timing"] else (
        "does not fit" if not r["fits"] else "misses timing")
    return {"verdict": verdict, "seconds": time.time() - t0, "report": r}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", nargs="+", default=list(LADDER), choices=list(TARGETS))
    p.add_argument("--hidden", nargs="+", type=int, help="widths to try, smallest first (default: each board's ladder)")
    p.add_argument("--networks", nargs="+", help="layer lists to try, e.g. 2,64,64,1 (instead of widening)")
    p.add_argument("--t-steps", type=int, help="time steps (default: the board's)")
    p.add_argument("--minutes", type=float, default=25.0, help="give up on a build after this long")
    p.add_argument("--build-root", default="build/largest")
    p.add_argument("--out", help="also write the table (markdown) here")
    a = p.parse_args(argv)
    rows, t0 = [], time.time()
    for board in a.boards:
        target = TARGETS[board]
        t_steps = a.t_steps or target.cfg.t_steps
        n_in, n_out = target.cfg.layers[0], target.cfg.layers[-1]
        tries = ([tuple(int(v) for v in spec.split(",")) for spec in a.networks] if a.networks else
                 [(n_in, hidden, n_out) for hidden in a.hidden or LADDER[board]])
        for layers in tries:
            print(f"{board}: {'-'.join(map(str, layers))}, T={t_steps} ...", file=sys.stderr, flush=True)
            res = try_network(board, layers, t_steps, Path(a.build_root), a.minutes)
            r = res.get("report") or {}
            use = resource_use(r)
            rows.append(f"| {board} | {'-'.join(map(str, layers))}, T={t_steps}, "
                        f"{target.neuron_lanes}x{target.sample_lanes} | {use['logic']} | {use['block RAM']} | "
                        f"{r.get('fmax_mhz') or '-'} | {target.freq_mhz:g} | {res['verdict']} | {res['seconds'] / 60:.1f} |")
            print(rows[-1], flush=True)
            if res["verdict"] != "fits, meets timing" and not a.networks:
                break
    head = ("| board | device, lanes | LUT4 (ECP5) / logic cells (iCE40) | block RAM | Fmax MHz | clock MHz | "
            "verdict | build min |\n" + "|---" * 8 + "|")
    table = "\n".join([head] + rows)
    print(table)
    if a.out:
        Path(a.out).write_text(
            "# Boards: the largest network per board\n\n"
            f"`python bench/largest.py {' '.join(argv if argv is not None else sys.argv[1:])}` on "
            f"{time.strftime('%Y-%m-%d')}, {platform.machine()}; {(time.time() - t0) / 60:.0f} min. Each board's "
            "default device with its hidden layer widened until a build does not fit, misses timing or runs "
            f"past {a.minutes:g} min.\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
