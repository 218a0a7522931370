"""A virtual board never outlives the process that started it: a `rfsnn train --backend rtl` host
killed with SIGKILL or sent SIGTERM, or a virtual board sent SIGTERM, leaves no simulator running.

Real processes throughout, found through /proc: the simulator is the Verilator model built in the
module's build folder (its path starts with it), and every process of a board names that folder on its
command line. One build for the module (about 30 s); each case reuses it.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rfsnn.host.problems import get_problem
from rfsnn.host.train import settings_for
from rfsnn.sim.virtual_board import TOPLEVEL

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("child-processes")]  # one model build

SMALL = ["--hidden", "6", "--t-steps", "4", "--batch", "24", "--directions", "2"]  # a quick build
CFG = settings_for("mexican-hat", hidden=(6,), t_steps=4, batch=24, directions=2).device_config(
    get_problem("mexican-hat").dim)  # the device the host's board is built for: the build is shared
BUILD_WAIT_S = 900.0  # the first case builds the model
GONE_WITHIN_S = 10.0
HOST_STOP_S = 120.0


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory, require_simulator):
    require_simulator("verilator")
    return tmp_path_factory.mktemp("virtual-board")


def stat_of(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state first, then the parent's pid), or None once the
    process has exited (a zombie has too)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else fields


def live_processes() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_of(int(entry.name))):
            out[int(entry.name)] = int(fields[1])
    return out


def descendants(pid: int) -> set[int]:
    parents = live_processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def simulators_under(pid: int, build_dir: Path) -> set[int]:
    return {p for p in descendants(pid) if cmdline(p)[:1] == [str(build_dir / TOPLEVEL)]}


def names(arg: str, folder: Path) -> bool:
    return arg == str(folder) or arg.startswith(str(folder) + os.sep)


def processes_naming(build_dir: Path) -> set[int]:
    """Every live process whose command line names the build folder: a host, a board's child, a
    simulator (a leftover of any case here)."""
    return {p for p in live_processes() if p != os.getpid() and any(names(a, build_dir) for a in cmdline(p))}


def wait_for_simulator(proc: subprocess.Popen, build_dir: Path) -> set[int]:
    """The processes under `proc` once its board's simulator runs."""
    deadline = time.monotonic() + BUILD_WAIT_S
    while not simulators_under(proc.pid, build_dir):
        if proc.poll() is not None:
            pytest.fail(f"exited with status {proc.returncode} before its simulator started:\n{proc.stdout.read()}")
        assert time.monotonic() < deadline, "no simulator started"
        time.sleep(0.1)
    return descendants(proc.pid)


def assert_all_gone(board: set[int], build_dir: Path) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := {p for p in board if stat_of(p)} | processes_naming(build_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running {GONE_WITHIN_S:.0f} s later: {({p: cmdline(p) for p in left})}"


def start_training_host(build_dir: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rfsnn.host.cli", "train", "--backend", "rtl", "--task", "mexican-hat", *SMALL,
           "--steps", "200", "--quiet", "--out", str(out), "--build-dir", str(build_dir)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_training_host_leaves_no_simulator(build_dir, tmp_path, sig):
    host = start_training_host(build_dir, tmp_path / "run")
    try:
        board = wait_for_simulator(host, build_dir)
        time.sleep(1.0)  # the board busy
        assert host.poll() is None, "the run ended before it could be killed"
        host.send_signal(sig)
        # SIGTERM kills a host still setting up; in its training loop, the run stops itself after the
        # step in progress (143) and writes what it has, which takes a few seconds on a virtual board.
        expected = {-signal.SIGKILL} if sig == signal.SIGKILL else {-signal.SIGTERM, 128 + signal.SIGTERM}
        assert host.wait(HOST_STOP_S) in expected
        assert_all_gone(board, build_dir)
    finally:
        host.kill()
        host.wait()


@pytest.mark.parametrize("entry", [["rfsnn.sim.virtual_board"], ["rfsnn.host.cli", "virtual-board"]],
                         ids=["module", "rfsnn-virtual-board"])
def test_sigterm_stops_a_virtual_board_and_its_simulator(build_dir, tmp_path, entry):
    config = tmp_path / "device.json"
    config.write_text(json.dumps(CFG.to_dict()))
    proc = subprocess.Popen([sys.executable, "-m", *entry, "--config", str(config), "--build-dir", str(build_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("port: "):
                break
        else:
            pytest.fail(f"no port line; exit status {proc.wait()}")
        board = wait_for_simulator(proc, build_dir)
        assert os.path.exists(line.removeprefix("port: ").strip())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "virtual board stopped" in proc.stdout.read()
        assert_all_gone(board, build_dir)
        assert not list(build_dir.glob("port.*"))  # its port file removed
    finally:
        proc.kill()
        proc.wait()
