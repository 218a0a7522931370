"""A simulated board on a pseudo-terminal: the whole gateware (rtl.top.DeviceTop, real UART included) on
Verilator (or Icarus), served by the cocotb harness in sim/cocotb/tb_virtual_board.py.

    serve(board, on_ready=print)      # blocking; what `rfsnn virtual-board` runs
    with VirtualBoard.launch(board) as vb:   # a child process, for tests and `rfsnn train --backend rtl`
        Device(SerialTransport(vb.port), timeout=...)
    python -m rfsnn.sim.virtual_board --config device.json ...   # the child VirtualBoard.launch starts

The host talks to it exactly as to a board, through the same bytes; only slower (about a hundred times
slower than a board at 50 MHz), so hosts give it long timeouts.

A virtual board never outlives the process that serves it, nor the one that launched it: the harness
inside the simulator watches both (Lifelines) and ends the simulation when either exits, however it
exits (SIGKILL included); the launched child watches its launcher too, and serve() turns SIGTERM into
a clean stop (the simulator killed, the port file removed).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .contract.config import DeviceConfig

TOPLEVEL = "rfsnn_board"
PORT_PREFIX = "port: "


class VirtualBoardError(RuntimeError):
    pass


class Lifelines:
    """The processes this one must not outlive, held as pidfds: a pidfd becomes readable when its process
    exits, whatever ends it, so no polling of pids (which the system may reuse) is needed."""

    def __init__(self, pids: Iterable[int], parent: int | None = None):
        self.fds: list[int] = []
        self.polled: list[int] = []  # without pidfds (not Linux 5.3+): looked up at each gone()
        self.lost = False
        for pid in pids:
            try:
                self.fds.append(os.pidfd_open(pid))
            except ProcessLookupError:  # gone already
                self.lost = True
            except (AttributeError, OSError):
                self.polled.append(pid)
        # The parent may have exited, and its pid been reused, before its pidfd was opened: then this
        # process has been handed to another parent already.
        if parent is not None and os.getppid() != parent:
            self.lost = True

    def gone(self, timeout: float | None = 0.0) -> bool:
        """Whether any of them has exited, waiting up to `timeout` seconds (None: until one does)."""
        if not self.lost and self.polled:
            self.lost = not all(_exists(pid) for pid in self.polled)
            if timeout and not self.fds:
                time.sleep(timeout)
        if not self.lost and self.fds:
            self.lost = bool(select.select(self.fds, [], [], timeout)[0])
        return self.lost

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        pass
    return True


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
        from rfsnn.rtl.link.uart import divisor_for

        return divisor_for(self.clock_hz, self.baud)

    def key(self) -> str:
        d = dataclasses.asdict(self)
        d["cfg"] = self.cfg.to_dict()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def default_build_dir(self) -> Path:
        return Path("build") / "virtual-board" / f"{self.simulator}-{self.key()}"


def serve(board: BoardSpec, build_dir: Path | None = None, on_ready=None, on_status=None,
          stats_file: Path | None = None, parent_pid: int | None = None) -> None:
    """Build (or reuse the build) and serve until the process is stopped. on_ready(path) is called once
    the device is out of reset and the terminal exists; on_status(text) reports the slow steps;
    stats_file receives the simulated time (ps) whenever the board goes idle.

    The simulation ends when this process exits, and when parent_pid (the process that started this
    one) does. Called in the main thread, serve() stops on SIGTERM as on Ctrl-C: the simulator is
    killed and KeyboardInterrupt raised; it sends itself SIGTERM when parent_pid exits."""
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
    lifelines = [os.getpid()] + ([parent_pid] if parent_pid else [])
    launcher = Lifelines([parent_pid], parent=parent_pid) if parent_pid else None
    if launcher and launcher.gone():
        return
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
    in_main_thread = threading.current_thread() is threading.main_thread()
    guard = None
    if in_main_thread:
        previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        if launcher:  # also stops a build, which no harness watches yet
            guard = threading.Thread(target=_interrupt_main_when_gone, args=(launcher, stop), daemon=True)
            guard.start()
    try:
        rtlsim.run(DeviceTop(board.cfg, board.divisor, board.neuron_lanes, board.sample_lanes), TOPLEVEL,
                   "rfsnn.sim.cocotb.tb_virtual_board", board.simulator, build_dir=build_dir,
                   extra_env={"RFSNN_VB_PORT_FILE": str(port_file), "RFSNN_VB_PERIOD_PS": str(period_ps),
                              "RFSNN_VB_DIVISOR": str(board.divisor),
                              "RFSNN_VB_LIFELINES": ",".join(map(str, lifelines)),
                              **({"RFSNN_VB_STATS_FILE": str(Path(stats_file).resolve())} if stats_file else {})},
                   quiet=True, ports_only=True, reuse_build=True)
    except AssertionError:
        raise VirtualBoardError(f"the virtual board's simulation stopped with an error; see {build_dir / 'sim.log'}") \
            from None
    finally:
        stop.set()
        port_file.unlink(missing_ok=True)
        if in_main_thread:
            if guard:  # before the handler goes: a late signal from it must still meet _interrupt
                guard.join(1.0)
            signal.signal(signal.SIGTERM, previous_sigterm)
        if launcher:
            launcher.close()


def _interrupt(signum, frame):
    # As KeyboardInterrupt, SIGTERM unwinds subprocess.run, which kills the simulator, and the finally
    # clauses that remove the port file; `rfsnn virtual-board` already stops cleanly on it.
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupt_main_when_gone(launcher: Lifelines, stop: threading.Event) -> None:
    while not stop.is_set():
        if launcher.gone(0.5):
            if not stop.is_set():
                # A signal to the main thread breaks its wait for the simulator (or the build).
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            return


class VirtualBoard:
    """A virtual board in a child process (`python -m rfsnn.sim.virtual_board`), stopped on exit, and
    by itself if this process exits first."""

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
        cmd = [sys.executable, "-m", "rfsnn.sim.virtual_board", "--config", str(config),
               "--neuron-lanes", str(board.neuron_lanes), "--sample-lanes", str(board.sample_lanes),
               "--clock-mhz", repr(board.clock_hz / 1e6), "--baud", str(board.baud),
               "--simulator", board.simulator, "--build-dir", str(build_dir), "--parent-pid", str(os.getpid())]
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


def main(argv: list[str] | None = None) -> int:
    from . import rtlsim

    p = argparse.ArgumentParser(prog="python -m rfsnn.sim.virtual_board",
                                description="Serve the gateware, simulated, on a pseudo-terminal until stopped "
                                            f"(prints `{PORT_PREFIX}/dev/pts/N` when ready).")
    p.add_argument("--config", required=True, help="DeviceConfig JSON")
    p.add_argument("--neuron-lanes", type=int, default=1)
    p.add_argument("--sample-lanes", type=int, default=8, help="a power of two")
    p.add_argument("--clock-mhz", type=float, default=12.0, help="the simulated board's clock")
    p.add_argument("--baud", type=int, default=3_000_000, help="the UART's baud rate")
    p.add_argument("--simulator", choices=rtlsim.SIMULATORS, default="verilator")
    p.add_argument("--build-dir", help="where to build (default build/virtual-board/<simulator>-<hash>; reused)")
    p.add_argument("--stats-file", help="write the simulated time (ps) here whenever the board goes idle")
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # VirtualBoard.launch's: stop when it exits
    a = p.parse_args(argv)
    try:
        cfg = DeviceConfig.from_dict(json.loads(Path(a.config).read_text()))
        board = BoardSpec(cfg, a.neuron_lanes, a.sample_lanes, a.clock_mhz * 1e6, a.baud, a.simulator)
        serve_until_stopped(board, a.build_dir and Path(a.build_dir), a.stats_file and Path(a.stats_file),
                            a.parent_pid)
    except (OSError, ValueError, VirtualBoardError, rtlsim.SimulatorMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


def serve_until_stopped(board: BoardSpec, build_dir: Path | None = None, stats_file: Path | None = None,
                        parent_pid: int | None = None) -> None:
    """serve(), saying on stdout what is served, the `port: ` line when ready, and when it stopped
    (Ctrl-C, SIGTERM, or the launcher gone): what `rfsnn virtual-board` and this module's entry print."""
    cfg = board.cfg
    print(f"virtual board: network {','.join(map(str, cfg.layers))}, T={cfg.t_steps}, max batch "
          f"{cfg.max_batch}; lanes {board.neuron_lanes}x{board.sample_lanes}; {board.clock_hz / 1e6:g} MHz clock, "
          f"{board.baud} baud (divisor {board.divisor}); {board.simulator}", flush=True)

    def ready(path):
        print(f"{PORT_PREFIX}{path}", flush=True)
        print(f"serving until stopped (Ctrl-C); e.g. rfsnn info --port {path}", flush=True)

    try:
        serve(board, build_dir, on_ready=ready, on_status=lambda text: print(text, flush=True),
              stats_file=stats_file, parent_pid=parent_pid)
    except KeyboardInterrupt:
        pass
    print("virtual board stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
