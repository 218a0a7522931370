"""RTL cycles: one training step of each task's default network on the learner's Verilog, measured.

    python bench/rtl_cycles.py [--simulators icarus verilator] [--rows ...] [--verilator-opt -O2]
                               [--out docs/results/rtl_cycles.md]

For each row: the task's default network (T = 16, batch 64, K = 4, or 8 for reaction-diffusion; central
differences, rademacher noise, global scope, stochastic rounding), its real data and initial weights
exactly as `rfsnn train` step 0 builds them (host.train.Run with the golden backend: the first batch of
the training stream, the quantised floatnet.init_params weights, the step's gain from the default lr),
one TRAIN_STEP on each simulator, checked bit for bit against the golden model. Columns:
spikes and spike fan-out of the step (the device's counters); cycles per step (Counter.CYCLES_LAST);
ideal cycles (rfsnn.sim.learner_sim.ideal_cycles: the step's lane work over P = N x S lanes, plus the
update pass at P weights per clock); efficiency = ideal / measured; at 50 MHz, steps/s = 50e6 / cycles
and training samples/s = batch x steps/s (each sample is evaluated 2K times within the step); and each
simulator's speed, cycles of the TRAIN_STEP per wall-clock second of the simulator.
Rows with the same network and lanes share one build (one simulator process per build).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

CLOCK_HZ = 50e6
ROWS = {  # name: (task, neuron lanes, sample lanes)
    "mexican-hat 1x64": ("mexican-hat", 1, 64),  # the ULX3S-85F's lanes: the batch of 64 in one group
    "mexican-hat 1x8": ("mexican-hat", 1, 8),
    "mexican-hat 2x4": ("mexican-hat", 2, 4),
    "mexican-hat 8x1": ("mexican-hat", 8, 1),
    "poisson1d 1x8": ("poisson1d", 1, 8),
    "reaction-diffusion 1x8": ("reaction-diffusion", 1, 8),
}


def task_step(task: str, batch: int = 64, seed: int = 0, device: dict | None = None):
    """(cfg, params, x, t, StepParams) of `rfsnn train --task TASK` step 0 (golden backend); `device`: a
    DeviceConfig dict to train instead of the task's default network."""
    from rfsnn.sim.contract import streams
    from rfsnn.sim.contract.fixed import quantize
    from rfsnn.host.train import Run, lr_at, settings_for
    from rfsnn.sim.contract.config import DeviceConfig
    from rfsnn.sim.learner_sim import make_steps

    s = settings_for(task, backend="golden", batch=batch, seed=seed)
    if device is not None:
        s.use_device(DeviceConfig.from_dict(device))
    run = Run(s)
    cfg = run.cfg
    # step 0's batch and seed as the device draws them from the training set (sim.contract.streams)
    draw = streams.draw_step(run.backend.data_state, len(run.data.x_train), s.batch, cfg)
    xb, ub = run.data.x_train[draw.indices], run.data.u_train[draw.indices]
    x = quantize(run.scaler.inputs(xb), cfg.x_frac, cfg.x_bits, "input")
    t = quantize(run.scaler.targets(ub).reshape(len(ub), -1), cfg.w_frac, cfg.y_bits, "target")
    params = [np.asarray(p, np.int64) for p in run.backend.params]
    sp = make_steps(cfg, s.batch, 1, seed, s.directions, s.noise, s.difference, s.scope, s.stochastic_rounding,
                    lr=lr_at(s, s.base_lr(), 0), sigma=s.sigma, clip=s.clip)[0]
    sp = dataclasses.replace(sp, seed=draw.seed)
    return cfg, params, np.asarray(x, np.int64), np.asarray(t, np.int64), sp, s


def main(argv=None) -> int:
    from rfsnn.sim import rtlsim
    from rfsnn.sim.learner_sim import compare_with_golden, ideal_cycles, n_passes, simulate_runs, step_figures

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--simulators", nargs="+", default=["icarus", "verilator"], choices=list(rtlsim.SIMULATORS))
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--verilator-opt", default="-O2", help="C++ optimisation of the Verilator model (default -O2)")
    p.add_argument("--out", default="docs/results/rtl_cycles.md")
    a = p.parse_args(argv)
    command = "python bench/rtl_cycles.py" + "".join(
        f" {flag} {' '.join(v) if isinstance(v, list) else v}" for flag, v, d in
        (("--simulators", a.simulators, ["icarus", "verilator"]), ("--rows", a.rows, list(ROWS)),
         ("--verilator-opt", a.verilator_opt, "-O2")) if v != d)
    for sim in a.simulators:
        rtlsim.find_simulator(sim)

    t_start = time.time()
    jobs = {}  # (layers, N, S) -> row names sharing one build
    problems = {}
    for name in a.rows:
        task, N, S = ROWS[name]
        problems[name] = task_step(task)
        jobs.setdefault((problems[name][0].layers, problems[name][0].t_steps, N, S), []).append(name)

    results = {name: {"sims": {}} for name in a.rows}
    for (layers, _, N, S), names in jobs.items():
        cfg = problems[names[0]][0]
        runs = [dict(params=problems[n][1], x=problems[n][2], t=problems[n][3], steps=[problems[n][4]]) for n in names]
        for sim in a.simulators:
            print(f"{', '.join(names)}: {sim} ...", file=sys.stderr, flush=True)
            res = simulate_runs(cfg, runs, sim, N, S, verilator_opt=a.verilator_opt if sim == "verilator" else None)
            for n, r in zip(names, res["runs"]):
                _, params, x, t, sp, _ = problems[n]
                cmp = compare_with_golden(cfg, params, x, t, [sp], {**r, "info": res["info"]}, N, S)
                st = r["steps"][0]
                results[n]["sims"][sim] = {"cycles": st["cycles"], "seconds": st["seconds"], "counters": st["counters"],
                                           "losses": st["losses"], "steps": st["steps"], "compare": str(cmp),
                                           "build_seconds": res["build_seconds"], "job_runs": len(names)}
                if cmp.golden:
                    results[n]["spikes"] = cmp.golden[0].counters.spikes
                    results[n]["spike_fanout"] = cmp.golden[0].counters.spike_fanout
                print(f"  {n} on {sim}: {cmp}; {st['cycles']} cycles in {st['seconds']:.1f} s "
                      f"({st['cycles'] / st['seconds']:.0f} cycles/s); build {res['build_seconds']:.0f} s",
                      file=sys.stderr, flush=True)

    header = ("| task | network | K | lanes N x S | batch | spikes | spike fan-out | cycles / step | ideal cycles | "
              "work efficiency | lane occupancy | multiplier occupancy | steps/s @ 50 MHz | training samples/s @ 50 MHz | "
              + " | ".join(f"{s} cycles/s" for s in a.simulators) + " | golden model |\n"
              + "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(a.simulators) + "---|")
    lines = [header]
    for name in a.rows:
        task, N, S = ROWS[name]
        cfg, params, x, t, sp, s = problems[name]
        sims = results[name]["sims"]
        cycles = {v["cycles"] for v in sims.values()}
        spikes = results[name].get("spikes") or [next(iter(sims.values()))["counters"]["spikes0"]]
        ideal = ideal_cycles(cfg, N, S, len(x), sp, spikes)
        cyc = max(cycles)
        figures = step_figures(cfg, N, S, len(x), sp, spikes, cyc)
        results[name].update(task=task, layers=list(cfg.layers), t_steps=cfg.t_steps, directions=sp.directions,
                             passes=n_passes(sp), neuron_lanes=N, sample_lanes=S, batch=len(x), ideal_cycles=ideal,
                             cycles=cyc, **figures, steps_per_s=CLOCK_HZ / cyc,
                             samples_per_s=len(x) * CLOCK_HZ / cyc, step_params=sp.to_dict())
        verdicts = {v["compare"] for v in sims.values()}
        verdict = verdicts.pop() if len(verdicts) == 1 else "; ".join(f"{k}: {v['compare']}" for k, v in sims.items())
        if len(cycles) > 1:
            verdict += f" (cycles differ between simulators: {sorted(cycles)})"
        lines.append(
            f"| {task} | {','.join(map(str, cfg.layers))}, T={cfg.t_steps} | {sp.directions} | {N} x {S} | "
            f"{len(x)} (task data) | {'+'.join(f'{v:,}' for v in spikes)} | {results[name].get('spike_fanout', 0):,} | "
            f"{cyc:,} | {ideal:,.0f} | {figures['work_efficiency']:.2f} | "
            f"{'-' if figures['lane_occupancy'] is None else format(figures['lane_occupancy'], '.2f')} | "
            f"{figures['multiplier_occupancy']:.2f} | "
            f"{CLOCK_HZ / cyc:,.0f} | {len(x) * CLOCK_HZ / cyc:,.0f} | "
            + " | ".join(f"{sims[s]['cycles'] / sims[s]['seconds']:,.0f}" if s in sims else "-" for s in a.simulators)
            + f" | {verdict} |")
    for line in lines:
        print(line)
    total = time.time() - t_start
    import amaranth
    import cocotb

    text = (f"# RTL cycles per training step\n\nMeasured with `{command}` on {time.strftime('%Y-%m-%d')}, "
            f"{platform.machine()}, Python {platform.python_version()}, cocotb {cocotb.__version__}, "
            f"Amaranth {amaranth.__version__}; Verilator model compiled with {a.verilator_opt}; "
            f"total {total / 60:.0f} min.\n\n"
            "One training step per row, from the task's real data and initial weights (the first batch and "
            "the quantised initial weights of `rfsnn train --task TASK` with the golden backend, step 0's "
            "seed and gain); central differences, rademacher noise, global scope, stochastic rounding. "
            "Spikes and spike fan-out are the step's counts over all its passes (the device's counters, "
            "equal to the golden model's). *Ideal cycles* = passes x batch x (n1 (n0+1) input MACs (the "
            "first hidden layer's spikes are a table lookup of its current) + 2 T sum(deeper hidden) LIF "
            "updates and bias additions + nL (n_{L-1}+1) readout MACs) / P + event additions / P + "
            "n_params / P, with P = N x S lanes (`rfsnn.sim.learner_sim.ideal_cycles`; the terms of deeper "
            "hidden layers are zero for one hidden layer); *work efficiency* = ideal / measured; *lane occupancy* = the clocks in which the lanes execute (`rfsnn.sim.cycles.lane_clocks`) / measured; *multiplier occupancy* = the step's multiplies / (P x measured) (docs/rtl.md, 'How busy the array is'). *steps/s* = 50e6 / (cycles per step); *training "
            "samples/s* = batch x steps/s, the samples of the training stream consumed per second (each is "
            "evaluated 2K times within its step). Simulator speed = cycles of the TRAIN_STEP command / "
            "wall-clock seconds the simulator spent in it (cocotb 2.1, command traffic excluded).\n\n"
            + "\n".join(lines) + "\n")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "date": time.strftime("%Y-%m-%d"),
                                                    "verilator_opt": a.verilator_opt, "clock_hz": CLOCK_HZ,
                                                    "rows": results}, indent=2))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    bad = [n for n, r in results.items() if any(v["compare"] != "bit-exact" for v in r["sims"].values())]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
