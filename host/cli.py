"""`rfsnn` command line: train, predict, config, sim, info, read-weights."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .inputs import load_device_config


def _int_at_least(low: int):
    """An argparse type: an integer >= low (refused at parse time, before anything runs)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {v}")
        return v
    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a positive finite number."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return v


def _tuple_of_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 64 or 32,32, got {text!r}")


# Options --resume refuses: the run's settings come from its config.json, its folder is the one resumed.
RUN_SETTINGS = ("task", "backend", "steps", "batch", "directions", "sigma", "lr", "hidden", "t_steps", "difference",
                "scope", "noise", "no_stochastic_rounding", "seed", "eval_every", "device_config", "out", "force")


def cmd_train(a) -> int:
    from .backends import LinkOptions
    from .train import Stop, resume, settings_for, train

    link = LinkOptions(port=a.port, baud=a.baud, timeout=a.timeout, retries=a.retries, simulator=a.simulator,
                       neuron_lanes=a.neuron_lanes, sample_lanes=a.sample_lanes, build_dir=a.build_dir)
    stop = Stop()
    if a.resume:
        given = [f"--{k.replace('_', '-')}" for k in RUN_SETTINGS if getattr(a, k) not in (None, False)]
        if given:
            raise ValueError(f"--resume continues {a.resume} with the settings in its config.json; drop "
                             f"{', '.join(given)}")
        out = Path(a.resume)
        m = resume(out, progress=not a.quiet, link=link, stop=stop)
    else:
        s = settings_for(a.task or "mexican-hat", backend=a.backend or "golden", hidden=a.hidden, steps=a.steps,
                         batch=a.batch, directions=a.directions, sigma=a.sigma, lr=a.lr, seed=a.seed,
                         t_steps=a.t_steps, difference=a.difference, scope=a.scope, noise=a.noise,
                         eval_every=a.eval_every)
        if a.no_stochastic_rounding:
            s.stochastic_rounding = False
        if a.device_config:
            cfg = load_device_config(a.device_config)
            given = {k: v for k, v in (("--hidden", a.hidden), ("--t-steps", a.t_steps)) if v is not None}
            if given:
                raise ValueError(f"{' and '.join(given)} come from --device-config ({a.device_config}); drop them")
            s.use_device(cfg)
        if a.port and s.backend != "serial":
            raise ValueError(f"--port is for --backend serial (this run uses --backend {s.backend})")
        out = Path(a.out) if a.out else Path("runs") / f"{s.task}-{s.backend}-{time.strftime('%Y%m%d-%H%M%S')}"
        m = train(s, out=out, progress=not a.quiet, link=link, force=a.force, stop=stop)
    print(f"{m['task']} / {m['backend']}: {m['steps']} of {m['steps_planned']} steps, {m['forward_passes']} forward "
          f"passes, {m['wall_s']:.1f} s, test relative L2 error {m['test_rel_l2']:.4f}")
    print(f"run folder: {out}  (metrics.json, weights.npz, prediction.png, loss.png)")
    if m["interrupted"]:
        print(f"the run was stopped; continue it with `rfsnn train --resume {out}`", file=sys.stderr)
        return stop.exit_code
    return 0


def cmd_predict(a) -> int:
    from .dataset import validate_points
    from .inputs import load_points
    from .runfolder import write_npy
    from .train import load_run

    notes: list[str] = []
    run = load_run(Path(a.run), notes)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    x = load_points(a.input, run.problem.dim, run.problem.coord_names)
    x = validate_points(x, run.problem, what="input")
    y = run.predict(x)
    if not np.all(np.isfinite(y)):
        raise JobFailed(f"the network of {a.run} gives non-finite predictions (sample "
                        f"{int(np.argmax(~np.isfinite(y)))}); nothing was written")
    write_npy(Path(a.output), y)
    print(f"{len(y)} predictions from {a.run} ({run.s.backend}) written to {a.output}")
    return 0


class JobFailed(RuntimeError):
    """A job that ran and failed (exit 1)."""


def cmd_config(a) -> int:
    from .train import settings_for
    from .problems import get_problem

    s = settings_for(a.task)
    cfg = s.device_config(get_problem(a.task).dim)
    print(json.dumps({"device": cfg.to_dict(), "cost": cfg.cost(), "train_defaults": s.to_dict()}, indent=2))
    return 0


def _device_config(a, default):
    """The device configuration of `rfsnn sim`, `virtual-board` and `build`: --config (inputs.load_device_config)
    or else the command's default, then --layers and --t-steps on top."""
    import dataclasses

    cfg = load_device_config(a.config) if a.config else default
    changes = {k: v for k, v in (("layers", a.layers), ("t_steps", a.t_steps)) if v is not None}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def cmd_sim(a) -> int:
    from rfsnn.rtl.learner import Learner
    from rfsnn.sim import rtlsim
    from rfsnn.sim.contract.config import DeviceConfig
    from rfsnn.sim.learner_sim import (compare_with_golden, firing_rates, format_figures, ideal_cycles, make_steps,
                                       n_passes, simulate, step_figures)

    from .backends import random_problem

    cfg = _device_config(a, DeviceConfig())
    if not 1 <= a.batch <= cfg.max_batch:
        raise ValueError(f"--batch {a.batch}: the device holds 1..{cfg.max_batch} samples (max_batch)")
    if a.directions > cfg.max_directions:
        raise ValueError(f"--directions {a.directions}: the device takes K in 1..{cfg.max_directions}")
    Learner.check_lanes(cfg, a.neuron_lanes, a.sample_lanes)
    try:
        rtlsim.find_simulator(a.simulator)
    except rtlsim.SimulatorMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    params, x, t = random_problem(cfg, a.batch, a.seed)
    rates = firing_rates(cfg, params, x)
    if not all(r > 0 for r in rates):
        raise ValueError(f"the random network does not spike (firing rates {rates}); try another --seed")
    steps = make_steps(cfg, a.batch, a.steps, a.seed, a.directions, a.noise, a.difference, a.scope,
                       not a.no_stochastic_rounding, lr=a.lr)
    N, S = a.neuron_lanes, a.sample_lanes
    print(f"network {','.join(map(str, cfg.layers))}, T={cfg.t_steps}, {cfg.n_params} parameters; batch {a.batch}; "
          f"K={a.directions} {a.difference} {a.noise} {a.scope}, stochastic rounding "
          f"{'off' if a.no_stochastic_rounding else 'on'}; lanes {N}x{S}; {a.steps} step(s) on {a.simulator}")
    print("random network and batch: hidden firing rates " + ", ".join(f"{r:.3f}" for r in rates)
          + " spikes/neuron/step")
    res = simulate(cfg, params, x, t, steps, a.simulator, N, S, build_dir=a.build_dir)
    cmp = compare_with_golden(cfg, params, x, t, steps, res, N, S)
    print(f"build + start-up {res['build_seconds']:.1f} s, simulation {res['wall_seconds']:.1f} s, "
          f"{res['commands']} commands")
    print(cmp)
    for n, (sp, r) in enumerate(zip(steps, res["steps"])):
        if n < len(cmp.golden):
            spikes = cmp.golden[n].counters.spikes
        else:  # after a mismatch: the device's own counts
            spikes = [r["counters"][f"spikes{h}"] for h in range(len(cfg.layers) - 2)]
        ideal = ideal_cycles(cfg, N, S, a.batch, sp, spikes)
        clipped = sum(abs(v) >= sp.clip for v in r["steps"])
        figures = format_figures(step_figures(cfg, N, S, a.batch, sp, spikes, r["cycles"]))
        print(f"step {n}: {n_passes(sp)} passes, cycles {r['cycles']}, ideal {ideal:.0f}; {figures}; "
              f"spikes {'+'.join(map(str, spikes))}, "
              f"spike fan-out {r['counters']['spike_fanout']}; {clipped} of {sp.directions} steps clipped; "
              f"simulator {r['cycles'] / r['seconds']:.0f} cycles/s")
    return 0 if cmp.ok else 1


def cmd_virtual_board(a) -> int:
    """Serve the gateware on a simulator behind a pseudo-terminal until stopped (Ctrl-C)."""
    from rfsnn.sim import rtlsim
    from rfsnn.sim.virtual_board import BoardSpec, serve_until_stopped

    from .problems import get_problem
    from .train import settings_for

    # By default the task's device, so that `rfsnn train --task T --backend serial` matches it.
    cfg = _device_config(a, settings_for(a.task).device_config(get_problem(a.task).dim))
    from rfsnn.rtl.learner import Learner

    board = BoardSpec(cfg, a.neuron_lanes, a.sample_lanes, a.clock_mhz * 1e6, a.baud, a.simulator)
    Learner.check_lanes(cfg, a.neuron_lanes, a.sample_lanes)
    board.divisor  # refuses a baud rate the clock cannot make
    rtlsim.find_simulator(a.simulator)  # SimulatorMissing: exit 3
    serve_until_stopped(board, a.build_dir and Path(a.build_dir), a.stats_file and Path(a.stats_file))
    return 0


def cmd_build(a) -> int:
    """Bitstream, utilisation and post-route Fmax for a board (YoWASP tools)."""
    from rfsnn.boards.build import BuildError, build, format_report
    from rfsnn.boards.targets import get_target

    target = get_target(a.board)
    cfg = _device_config(a, target.cfg)
    out = Path(a.out or Path("build") / "boards" / a.board)
    try:
        report = build(target, out, cfg, a.freq, a.neuron_lanes, a.sample_lanes)
    except BuildError as e:
        import json as _json

        if (out / "report.json").exists():
            print(format_report(_json.loads((out / "report.json").read_text())))
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    print(f"report: {out / 'report.json'}; nextpnr's log: {report['nextpnr_log']}")
    return 0


def cmd_program(a) -> int:
    """Load a built bitstream onto a connected board with the programmer its family uses."""
    import shutil
    import subprocess

    from rfsnn.boards.targets import get_target

    target = get_target(a.board)
    out = Path(a.out or Path("build") / "boards" / a.board)
    bitstream = out / f"rfsnn.{target.bitstream_ext}"
    if not bitstream.exists():
        print(f"error: no bitstream at {bitstream}; run `rfsnn build --board {a.board}` first", file=sys.stderr)
        return 2
    report = out / "report.json"
    if report.exists() and not a.force:
        r = json.loads(report.read_text())
        if not (r.get("fits") and r.get("meets_timing")):
            print(f"error: the build in {out} {'does not fit' if not r.get('fits') else 'misses timing'} "
                  f"(Fmax {r.get('fmax_mhz')} MHz at {r.get('clock_mhz')} MHz); rebuild, or --force to load it anyway",
                  file=sys.stderr)
            return 2
    commands = {"iceprog": ["iceprog", str(bitstream)],
                "dfu-util": ["dfu-util", "-D", str(bitstream)],  # the OrangeCrab's bootloader (hold its button)
                "openFPGALoader": ["openFPGALoader", "-b", "ice40_generic" if target.family == "ice40" else "ulx3s",
                                   str(bitstream)]}
    for tool in target.programmer:
        if shutil.which(tool):
            print(" ".join(commands[tool]), flush=True)
            return subprocess.call(commands[tool])
    print(f"error: no programmer found for {a.board}: install one of {', '.join(target.programmer)} "
          f"(Debian: apt-get install {' or '.join({'iceprog': 'fpga-icestorm', 'openFPGALoader': 'openfpgaloader', 'dfu-util': 'dfu-util'}[t] for t in target.programmer)})",
          file=sys.stderr)
    return 3


def _open_device(a):
    from .link import Device, SerialTransport

    return Device(SerialTransport(a.port, a.baud), timeout=a.timeout, retries=a.retries)


def cmd_info(a) -> int:
    """The device's configuration (from INFO) and its counters."""
    dev = _open_device(a)
    print(json.dumps({"port": a.port, "device": dev.cfg.to_dict(), "neuron_lanes": dev.neuron_lanes,
                      "sample_lanes": dev.sample_lanes, "training_steps_done": dev.steps_done,
                      "counters": dev.counters()}, indent=2))
    return 0


def cmd_read_weights(a) -> int:
    """The device's weights, in a run folder's weights.npz layout (W1, b1, ... and W1_int, b1_int, ...)."""
    dev = _open_device(a)
    params = dev.read_params()
    f = 1.0 / (1 << dev.cfg.w_frac)
    out = {}
    for l, p in enumerate(params, start=1):
        out[f"W{l}"], out[f"b{l}"] = p[:, :-1] * f, p[:, -1] * f
        out[f"W{l}_int"], out[f"b{l}_int"] = p[:, :-1], p[:, -1]
    from .runfolder import write_npz

    write_npz(Path(a.output), out)  # exactly at --output (np.savez on a name would append .npz)
    print(f"{dev.cfg.n_params} parameters of a {','.join(map(str, dev.cfg.layers))} network read from {a.port} "
          f"into {a.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKENDS
    from .train import TASK_DEFAULTS

    p = argparse.ArgumentParser(
        prog="rfsnn", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train spiking neural networks on chip by weight perturbation: the golden model (the chip in "
                    "software), float references, the gateware on a simulator, and boards.",
        epilog="exit codes:\n"
               "  0    done\n"
               "  1    the job ran and failed (a build that does not fit or meet timing, a diverged run, ...)\n"
               "  2    bad input: an option, a file or a run folder that cannot be used (nothing was run)\n"
               "  3    a tool or device is missing or stopped answering (simulator, programmer, serial port)\n"
               "  130  stopped with Ctrl-C (143: SIGTERM); a stopped run continues with `rfsnn train --resume RUN`\n"
               "Errors are one line; RFSNN_DEBUG=1 shows the traceback as well.")
    sub = p.add_subparsers(dest="command", required=True)

    def add_parser(*args, **kwargs):
        return sub.add_parser(*args, formatter_class=_DefaultsHelp, **kwargs)

    t = add_parser("train", help="train a network on a PDE task and write a run folder")
    t.add_argument("--task", choices=list(TASK_DEFAULTS), help="the task (default: mexican-hat)")
    t.add_argument("--backend", choices=BACKENDS,
                   help="golden: the device in software (the default); rtl: the gateware on a simulator (a virtual "
                        "board); serial: a board at --port; float-*: floating-point references")
    t.add_argument("--steps", type=int, help="training steps (default: the task's)")
    t.add_argument("--batch", type=int, help="samples per step (default: 64)")
    t.add_argument("--directions", type=int, help="K perturbation directions per step (default: the task's, 4 or 8)")
    t.add_argument("--sigma", type=float, help="perturbation scale in weight units (default: 0.015625); device "
                   "backends round it to whole weight LSBs")
    t.add_argument("--lr", type=float, help="learning rate (default: the backend's optimiser's, 0.08 for SGD, "
                   "0.003 for Adam)")
    t.add_argument("--hidden", type=_tuple_of_ints, help="hidden layer widths, e.g. 64 or 32,32 (default: 64)")
    t.add_argument("--t-steps", dest="t_steps", type=int, help="time steps per sample, a power of two (default: 16)")
    t.add_argument("--device-config", help="train the device this file describes (its network, T and register "
                   "widths): a DeviceConfig JSON, a run's config.json, or a board build's report.json")
    t.add_argument("--difference", choices=["central", "forward"], help="(default: central)")
    t.add_argument("--scope", choices=["global", "layerwise"], help="(default: global)")
    t.add_argument("--noise", choices=["rademacher", "gauss4"], help="(default: rademacher)")
    t.add_argument("--no-stochastic-rounding", action="store_true", help="round the updates to nearest instead")
    t.add_argument("--seed", type=int, help="seed of the data, the initial weights and the step seeds (default: 0)")
    t.add_argument("--eval-every", dest="eval_every", type=int,
                   help="steps between test-error evaluations (default: about 20 per run, but at most ~10%% of "
                        "the run's work)")
    t.add_argument("--out", help="run folder (default: runs/<task>-<backend>-<time>); refused if it holds a run")
    t.add_argument("--force", action="store_true", help="replace the run in --out")
    t.add_argument("--resume", metavar="RUN", help="continue a stopped, killed or failed run from its last "
                   "checkpoint, with its own settings")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    d = t.add_argument_group("device link (--backend serial / rtl)")
    d.add_argument("--port", help="serial port of the board (or of `rfsnn virtual-board`), e.g. /dev/ttyUSB1")
    d.add_argument("--baud", type=int, default=3_000_000, help="the UART's baud rate")
    d.add_argument("--timeout", type=float, help="seconds to wait for each reply (default: 2; rtl: 120)")
    d.add_argument("--retries", type=int, default=3, help="resends of a frame before the link is given up")
    d.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator", help="rtl: the simulator")
    d.add_argument("--neuron-lanes", type=int, default=1, help="rtl: the gateware's neuron lanes")
    d.add_argument("--sample-lanes", type=int, default=8, help="rtl: the gateware's sample lanes")
    d.add_argument("--build-dir", help="rtl: where the simulator model is built (reused)")
    t.set_defaults(func=cmd_train)

    pr = add_parser("predict", help="evaluate a trained run at arbitrary points")
    pr.add_argument("--run", required=True, help="run folder written by `rfsnn train`")
    pr.add_argument("--input", required=True, help=".npy array of shape (N, d) in the task's coordinates")
    pr.add_argument("--output", required=True, help=".npy file for the N predictions (written at exactly this path)")
    pr.set_defaults(func=cmd_predict)

    c = add_parser("config", help="print a task's default device configuration and its hardware cost")
    c.add_argument("--task", choices=list(TASK_DEFAULTS), default="mexican-hat")
    c.set_defaults(func=cmd_config)

    sm = add_parser("sim", help="run training steps of the learner RTL on a Verilog simulator next to the "
                        "golden model: bit-exactness, cycles, work efficiency, lane and multiplier occupancy")
    sm.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator",
                    help="verilator comes with rfsnn's install; icarus needs `apt-get install iverilog`")
    sm.add_argument("--config", help="DeviceConfig JSON (or a run's config.json or a board build's report.json); "
                    "default: DeviceConfig()")
    sm.add_argument("--layers", type=_tuple_of_ints, help="network, e.g. 2,64,1 (overrides --config)")
    sm.add_argument("--t-steps", dest="t_steps", type=_int_at_least(1), help="time steps per sample (a power of two)")
    sm.add_argument("--batch", type=_int_at_least(1), default=32, help="samples per step")
    sm.add_argument("--directions", type=_int_at_least(1), default=4, help="K")
    sm.add_argument("--noise", choices=["rademacher", "gauss4"], default="rademacher", help="direction entries")
    sm.add_argument("--difference", choices=["central", "forward"], default="central", help="loss differences")
    sm.add_argument("--scope", choices=["global", "layerwise"], default="global", help="what a direction perturbs")
    sm.add_argument("--no-stochastic-rounding", action="store_true", help="round the updates to nearest instead")
    sm.add_argument("--lr", type=_positive_float, default=0.01, help="learning rate folded into the step gain (gain_for)")
    sm.add_argument("--neuron-lanes", type=_int_at_least(1), default=1, help="the gateware's neuron lanes")
    sm.add_argument("--sample-lanes", type=_int_at_least(1), default=8, help="a power of two")
    sm.add_argument("--steps", type=_int_at_least(1), default=2, help="training steps to simulate")
    sm.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the random network, batch and step seeds")
    sm.add_argument("--build-dir", help="where to build (default: a temporary folder, removed afterwards)")
    sm.set_defaults(func=cmd_sim)
    vb = add_parser("virtual-board", help="serve the gateware, simulated, on a pseudo-terminal: a board for "
                        "`--port` without a board (prints `port: /dev/pts/N` when ready)")
    vb.add_argument("--task", choices=list(TASK_DEFAULTS), default="mexican-hat",
                    help="build the task's default device (unless --config)")
    vb.add_argument("--config", help="DeviceConfig JSON (or a run's config.json or a board build's report.json)")
    vb.add_argument("--layers", type=_tuple_of_ints, help="network, e.g. 2,64,1 (overrides the configuration)")
    vb.add_argument("--t-steps", dest="t_steps", type=_int_at_least(1), help="time steps per sample (a power of two)")
    vb.add_argument("--neuron-lanes", type=_int_at_least(1), default=1, help="the gateware's neuron lanes")
    vb.add_argument("--sample-lanes", type=_int_at_least(1), default=8, help="a power of two")
    vb.add_argument("--clock-mhz", type=_positive_float, default=12.0, help="the simulated board's clock")
    vb.add_argument("--baud", type=_int_at_least(1), default=3_000_000, help="the UART's baud rate")
    vb.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator",
                    help="icarus works but is about 300 times slower")
    vb.add_argument("--build-dir", help="where to build (default build/virtual-board/<simulator>-<hash>; reused)")
    vb.add_argument("--stats-file", help="write the simulated time (ps) here whenever the board goes idle")
    vb.set_defaults(func=cmd_virtual_board)
    from rfsnn.boards.targets import TARGETS

    bd = add_parser("build", help="build a board's bitstream with the YoWASP tools; print and write "
                        "report.json (utilisation, post-route Fmax); exit 1 if it does not fit or meet timing")
    bd.add_argument("--board", required=True, choices=list(TARGETS))
    bd.add_argument("--config", help="DeviceConfig JSON (or a run's config.json or a board build's report.json); "
                    "default: the board's")
    bd.add_argument("--layers", type=_tuple_of_ints, help="network, e.g. 2,32,1 (on top of the board's default)")
    bd.add_argument("--t-steps", dest="t_steps", type=_int_at_least(1), help="time steps per sample (a power of two)")
    bd.add_argument("--freq", type=_positive_float, help="clock in MHz (a PLL makes it); default: the board's")
    bd.add_argument("--neuron-lanes", type=_int_at_least(1), help="the gateware's neuron lanes (default: the board's)")
    bd.add_argument("--sample-lanes", type=_int_at_least(1), help="its sample lanes, a power of two (default: the board's)")
    bd.add_argument("--out", help="build folder (default build/boards/<board>)")
    bd.set_defaults(func=cmd_build)
    pg = add_parser("program", help="load a built bitstream onto a connected board (iceprog / openFPGALoader / "
                        "dfu-util)")
    pg.add_argument("--board", required=True, choices=list(TARGETS))
    pg.add_argument("--out", help="the build folder (default build/boards/<board>)")
    pg.add_argument("--force", action="store_true", help="load a bitstream whose build missed timing")
    pg.set_defaults(func=cmd_program)
    for name, func, hlp in (("info", cmd_info, "print a connected device's configuration and counters"),
                            ("read-weights", cmd_read_weights, "read a connected device's weights into an .npz")):
        d = add_parser(name, help=hlp)
        d.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB1 or /dev/pts/N")
        d.add_argument("--baud", type=_int_at_least(1), default=3_000_000, help="the UART's baud rate")
        d.add_argument("--timeout", type=_positive_float, default=1.0, help="seconds to wait for each reply")
        d.add_argument("--retries", type=_int_at_least(0), default=3, help="resends of a frame before giving up")
        if name == "read-weights":
            d.add_argument("--output", required=True, help="the .npz to write")
        d.set_defaults(func=func)
    return p


class _DefaultsHelp(argparse.HelpFormatter):
    """Option help that ends with the default, where there is one and the help does not say it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


# Exit codes (rfsnn --help): 2 bad input, 3 a missing or failing tool or device, 1 a job that failed.
BAD_INPUT, MISSING, FAILED = 2, 3, 1


def _exit_code(e: BaseException) -> int | None:
    """The exit code of an error the user can act on (None: an internal error). The classes come from
    modules that import no gateware, so that this costs no Amaranth import."""
    from rfsnn.sim.rtlsim import SimulatorMissing
    from rfsnn.sim.virtual_board import VirtualBoardError

    from .link import LinkError

    if isinstance(e, (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return BAD_INPUT
    if isinstance(e, (LinkError, SimulatorMissing, VirtualBoardError)):
        return MISSING
    if isinstance(e, (JobFailed, FloatingPointError)):  # rfsnn build reports its own BuildError (exit 1)
        return FAILED
    return None


def main(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    debug = os.environ.get("RFSNN_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted; a stopped training run continues with `rfsnn train --resume RUN`", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback (RFSNN_DEBUG=1 shows it)
        code = _exit_code(e)
        if debug:
            raise
        text = str(e).strip() or type(e).__name__
        if code is None:
            print(f"error: internal error, {type(e).__name__}: {text} (rerun with RFSNN_DEBUG=1 for the traceback, "
                  "and report it)", file=sys.stderr)
            return FAILED
        print(f"error: {text}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
