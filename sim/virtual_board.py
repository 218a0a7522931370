"""A simulated board on a pseudo-terminal: the whole gateware (rtl.top.DeviceTop, real UART included) on
Verilator (or Icarus), served by the cocotb harness in sim/cocotb/tb_virtual_board.py.

    serve(board, on_ready=print)      # blocking; what `rfsnn virtual-board` runs
    with VirtualBoard.launch(board) as vb:   # a child process, for tests and `rfsnn train --backend rtl`
        Device(SerialTransport(vb.port), timeout=...)

The host talks to it exactly as to a board, through the same bytes; only slower (about a hundred times
slower than a board at 50 MHz), so hosts give it long timeouts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .config import DeviceConfig

TOPLEVEL = "rfsnn_board"
PORT_PREFIX = "port: "


class VirtualBoardError(RuntimeError):
    pass


@dataclass(frozen=True)
class BoardSpec:
    """What is built: the device configuration, the lanes, the simulated clock and the baud rate."""

    cfg: DeviceConfig
    neuron_lanes: int = 1
    sample_lanes: int = 8
    clock_hz: float = 12e6  # the iCEBreaker's oscillator
    baud: int = 3_000_000
    simulator: str = "verilator"

    @property
    def divisor(self) -> int:
        from rfsnn.rtl.uart import divisor_for

        return divisor_for(self.clock_hz, self.baud)

    def key(self) -> str:
        d = dataclasses.asdict(self)
        d["cfg"] = self.cfg.to_dict()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def default_build_dir(self) -> Path:
        return Path("build") / "virtual-board" / f"{self.simulator}-{self.key()}"


def serve(board: BoardSpec, build_dir: Path | None = None, on_ready=None, on_status=None,
          stats_file: Path | None = None) -> None:
    """Build (or reuse the build) and serve until the process is stopped. on_ready(path) is called once
    the device is out of reset and the terminal exists; on_status(text) reports the slow steps;
    stats_file receives the simulated time (ps) whenever the board goes idle."""
    from rfsnn.rtl.learner import Learner
    from rfsnn.rtl.top import DeviceTop

    from . import rtlsim

    Learner.check_lanes(board.cfg, board.neuron_lanes, board.sample_lanes)
    rtlsim.find_simulator(board.simulator)
    build_dir = Path(build_dir or board.default_build_dir()).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    port_file = build_dir / f"port.{os.getpid()}"  # one per board: several may share a build
    port_file.unlink(missing_ok=True)
    period_ps = 2 * round(1e12 / board.clock_hz / 2)  # cocotb's Clock wants an even period
    stop = threading.Event()

    def announce():
        while not stop.is_set():
            if port_file.exists():
                if on_ready:
                    on_ready(port_file.read_text())
                return
            time.sleep(0.05)

    if on_status:
        cached = (build_dir / "build.stamp").exists()
        on_status(f"{'checking' if cached else 'building'} the {board.simulator} model in {build_dir}"
                  + ("" if cached else " (a few minutes the first time; reused afterwards)"))
    watcher = threading.Thread(target=announce, daemon=True)
    watcher.start()
    try:
        rtlsim.run(DeviceTop(board.cfg, board.divisor, board.neuron_lanes, board.sample_lanes), TOPLEVEL,
                   "rfsnn.sim.cocotb.tb_virtual_board", board.simulator, build_dir=build_dir,
                   extra_env={"RFSNN_VB_PORT_FILE": str(port_file), "RFSNN_VB_PERIOD_PS": str(period_ps),
                              "RFSNN_VB_DIVISOR": str(board.divisor),
                              **({"RFSNN_VB_STATS_FILE": str(Path(stats_file).resolve())} if stats_file else {})},
                   quiet=True, ports_only=True, reuse_build=True)
    except AssertionError:
        raise VirtualBoardError(f"the virtual board's simulation stopped with an error; see {build_dir / 'sim.log'}") \
            from None
    finally:
        stop.set()
        port_file.unlink(missing_ok=True)


class VirtualBoard:
    """A virtual board in a child process (`python -m rfsnn.host.cli virtual-board`), stopped on exit."""

    def __init__(self, proc: subprocess.Popen, port: str, log: Path):
        self.proc, self.port, self.log = proc, port, log

    @classmethod
    def launch(cls, board: BoardSpec, build_dir: Path | None = None, ready_timeout: float = 1200.0,
               on_status=None, stats_file: Path | None = None) -> "VirtualBoard":
        build_dir = Path(build_dir or board.default_build_dir()).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        config = build_dir / "device.json"
        config.write_text(json.dumps(board.cfg.to_dict()))
        log = build_dir / "virtual-board.log"
        cmd = [sys.executable, "-m", "rfsnn.host.cli", "virtual-board", "--config", str(config),
               "--neuron-lanes", str(board.neuron_lanes), "--sample-lanes", str(board.sample_lanes),
               "--clock-mhz", repr(board.clock_hz / 1e6), "--baud", str(board.baud),
               "--simulator", board.simulator, "--build-dir", str(build_dir)]
        if stats_file:
            cmd += ["--stats-file", str(stats_file)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # its own process group: stop() ends the simulator too
        lines: list[str] = []
        deadline = time.monotonic() + ready_timeout
        got: list[str] = []

        def read():
            for line in proc.stdout:
                lines.append(line)
                if on_status and not line.startswith(PORT_PREFIX):
                    on_status(line.rstrip())
                if line.startswith(PORT_PREFIX) and not got:
                    got.append(line[len(PORT_PREFIX):].strip())

        threading.Thread(target=read, daemon=True).start()
        while not got:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                log.write_text("".join(lines))
                why = f"exited with status {proc.returncode}" if proc.returncode is not None else \
                    f"not ready after {ready_timeout:.0f} s"
                raise VirtualBoardError(f"the virtual board {why}; its output is in {log} and the simulator's in "
                                   f"{build_dir / 'build.log'} and {build_dir / 'sim.log'}")
            time.sleep(0.05)
        return cls(proc, got[0], log)

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> "VirtualBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
