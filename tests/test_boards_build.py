"""Real board builds in the suite, through `rfsnn build` (YoWASP yosys and nextpnr), checked from
report.json: the iCEBreaker's default device (about 2-3 minutes on the 2-core CI machine) and the
ULX3S-12F's (3-4 minutes), plus about a minute compiling each tool's WebAssembly on a cold cache."""
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_ulx3s_12f_default_build_fits_and_meets_timing(tmp_path, capsys):
    from rfsnn.host import cli

    assert cli.main(["build", "--board", "ulx3s-12f", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fits"] and report["meets_timing"]
    assert report["fmax_mhz"] >= report["clock_mhz"] == 15.0
    for name in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D"):
        use = report["utilisation"][name]
        assert 0 < use["used"] <= use["available"]
    assert Path(report["bitstream"]).stat().st_size > 100_000
    assert "Max frequency for clock" in (tmp_path / "rfsnn.tim").read_text()  # nextpnr's own log is kept
    assert "meets timing" in capsys.readouterr().out


def test_icebreaker_default_build_fits_and_meets_timing(tmp_path, capsys):
    from rfsnn.host import cli

    assert cli.main(["build", "--board", "icebreaker", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fits"] and report["meets_timing"]
    assert report["fmax_mhz"] >= report["clock_mhz"] == 12.0
    assert report["fmax_mhz"] == report["clocks"]["cd_sync.clk"]["fmax_mhz"]  # the device's clock, not a net of nextpnr's
    for name in ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP"):
        use = report["utilisation"][name]
        assert 0 < use["used"] <= use["available"]
    assert Path(report["bitstream"]).stat().st_size > 100_000
    assert "meets timing" in capsys.readouterr().out
