"""A real board build in the suite: the ULX3S-12F's default device through `rfsnn build` (YoWASP yosys and
nextpnr-ecp5), checked from report.json. About 3-4 minutes on the 2-core CI machine (plus about a
minute compiling the tools' WebAssembly on a cold cache)."""
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
