"""Real board builds in the suite, through `rfsnn build` (YoWASP yosys and nextpnr), checked from
report.json: the iCEBreaker's default device (about 2-3 minutes on the 2-core CI machine; built once
for the module), the ULX3S-12F's (3-4 minutes), and an iCEBreaker build whose nextpnr is killed once it
has printed its pre-route Fmax (about 70 s), plus about a minute compiling each tool's WebAssembly on a
cold cache."""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rfsnn.boards.build import PNR_DONE
from rfsnn.boards.targets import TARGETS

pytestmark = pytest.mark.slow
# The tests of the one iCEBreaker build share a worker under pytest-xdist (make test); the others spread.
on_the_icebreaker_build = pytest.mark.xdist_group("icebreaker-build")


@pytest.fixture(scope="module")
def icebreaker_build(tmp_path_factory) -> Path:
    """The folder of an iCEBreaker build of the default device."""
    from rfsnn.host import cli

    folder = tmp_path_factory.mktemp("icebreaker")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["build", "--board", "icebreaker", "--out", str(folder)]) == 0
    assert "meets timing" in printed.getvalue()
    return folder


def test_ulx3s_12f_default_build_fits_and_meets_timing(tmp_path, capsys):
    from rfsnn.host import cli

    assert cli.main(["build", "--board", "ulx3s-12f", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fits"] and report["meets_timing"] and report["stage"] == "bitstream"
    assert report["fmax_mhz"] >= report["clock_mhz"] == TARGETS["ulx3s-12f"].freq_mhz
    for name in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D"):
        use = report["utilisation"][name]
        assert 0 < use["used"] <= use["available"]
    assert Path(report["bitstream"]).stat().st_size > 100_000
    assert "Max frequency for clock" in (tmp_path / "rfsnn.tim").read_text()  # nextpnr's own log is kept
    assert "meets timing" in capsys.readouterr().out


@on_the_icebreaker_build
def test_icebreaker_default_build_fits_and_meets_timing(icebreaker_build):
    report = json.loads((icebreaker_build / "report.json").read_text())
    assert report["fits"] and report["meets_timing"] and report["stage"] == "bitstream" and report["error"] is None
    assert report["fmax_mhz"] >= report["clock_mhz"] == 12.0
    assert report["fmax_mhz"] == report["clocks"]["cd_sync.clk"]["fmax_mhz"]  # the device's clock, not a net of nextpnr's
    for name in ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP"):
        use = report["utilisation"][name]
        assert 0 < use["used"] <= use["available"]
    assert Path(report["bitstream"]).stat().st_size > 100_000


@on_the_icebreaker_build
def test_training_for_a_build_takes_the_device_from_its_report(icebreaker_build, tmp_path):
    from rfsnn.host import cli

    report = json.loads((icebreaker_build / "report.json").read_text())
    assert cli.main(["train", "--task", "mexican-hat", "--device-config", str(icebreaker_build / "report.json"),
                     "--steps", "20", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == report["config"]


def descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def report_error(folder: Path) -> str:
    return json.loads((folder / "report.json").read_text())["error"] or ""


def test_a_build_killed_after_the_pre_route_estimate_claims_neither_fit_nor_timing(tmp_path, capsys):
    """nextpnr prints an Fmax estimate before routing; a build stopped there has no post-route figure."""
    from rfsnn.host import cli

    build = subprocess.Popen([sys.executable, "-m", "rfsnn.host.cli", "build", "--board", "icebreaker",
                              "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tim = tmp_path / "rfsnn.tim"
    deadline = time.monotonic() + 900
    try:
        while not (tim.exists() and "Max frequency for clock" in tim.read_text(errors="replace")):
            assert build.poll() is None, f"the build ended first: {build.communicate()}"
            assert time.monotonic() < deadline, "no pre-route Fmax in nextpnr's log"
            time.sleep(0.2)
        nextpnr = [p for p in descendants(build.pid) if "nextpnr" in cmdline(p)]
        assert nextpnr, "nextpnr is not running"
        for pid in nextpnr:
            os.kill(pid, signal.SIGKILL)
        assert PNR_DONE not in tim.read_text(errors="replace")  # killed before it finished
        out, err = build.communicate(timeout=60)
    finally:
        build.kill()
        build.wait()
    assert build.returncode == 1
    # One line of ours (the build script's shell may add its own "Killed").
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error: ")] == \
        [err.strip().splitlines()[-1]], err
    assert "SIGKILL" in report_error(tmp_path) and "before place-and-route finished" in err
    assert "place-and-route did not finish" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fits"] is False and report["meets_timing"] is False
    assert report["bitstream"] is None and report["fmax_mhz"] is None and report["clocks"] == {}
    assert report["stage"] in ("placement", "routing") and report["error"]
    assert not (tmp_path / "rfsnn.bin").exists()
    capsys.readouterr()
    assert cli.main(["program", "--board", "icebreaker", "--out", str(tmp_path)]) == 2  # refused: nothing to load
    assert "error:" in capsys.readouterr().err
