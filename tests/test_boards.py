"""Board targets (boards/): PLL settings, nextpnr report parsing, and the clock/baud check."""
import pytest

from rfsnn.boards.build import design_clock, parse_nextpnr_log
from rfsnn.boards.clocks import ecp5_pll, ice40_pll
from rfsnn.boards.targets import TARGETS, get_target


@pytest.mark.parametrize("fout", [15e6, 24e6, 30e6, 36e6, 48e6])
def test_ice40_pll_reaches_the_clock_within_its_limits(fout):
    s = ice40_pll(12e6, fout)
    p = s.params
    pfd = 12e6 / (p["DIVR"] + 1)
    vco = pfd * (p["DIVF"] + 1)
    assert 10e6 <= pfd <= 133e6 and 533e6 <= vco <= 1066e6
    assert s.fout == vco / 2 ** p["DIVQ"]
    assert abs(s.fout - fout) < 0.01 * fout


@pytest.mark.parametrize("fout", [15e6, 30e6, 60e6, 75e6])
def test_ecp5_pll_reaches_the_clock_within_its_limits(fout):
    s = ecp5_pll(25e6, fout)
    p = s.params
    pfd = 25e6 / p["CLKI_DIV"]
    assert 3.125e6 <= pfd and 400e6 <= s.fout * p["CLKOP_DIV"] <= 800e6
    assert s.fout == pytest.approx(pfd * p["CLKFB_DIV"]) and s.fout == pytest.approx(fout)


def test_unreachable_clocks_get_the_nearest():
    assert ecp5_pll(25e6, 12e6).fout == 12.5e6  # 12/25 would need a 1 MHz reference, below the PLL's 3.125


def test_nextpnr_log_gives_the_last_utilisation_and_the_post_route_fmax():
    log = """Info: Device utilisation:
Info: 	          TRELLIS_IO:     5/  197     2%
Info: 	        TRELLIS_COMB: 17000/24288    69%
Info: 	              DP16KD:    20/   56    35%
Info: 	          MULT18X18D:     9/   28    32%
Info:
Info: Max frequency for clock '$glbnet$clk': 16.25 MHz (FAIL at 30.00 MHz)
Info: Device utilisation:
Info: 	          TRELLIS_IO:     5/  197     2%
Info: 	        TRELLIS_COMB: 17405/24288    71%
Info: 	              DP16KD:    20/   56    35%
Info:
Info: Max frequency for clock '$glbnet$clk': 18.50 MHz (PASS at 15.00 MHz)
"""
    got = parse_nextpnr_log(log, "ecp5")
    assert got["utilisation"]["TRELLIS_COMB"] == {"used": 17405, "available": 24288, "what": "LUT4s"}
    assert "MULT18X18D" not in got["utilisation"]  # only the last block counts
    assert got["clocks"] == {"$glbnet$clk": {"fmax_mhz": 18.5, "target_mhz": 15.0, "pass": True}}


def test_every_target_has_a_clock_that_makes_its_baud_rate():
    from rfsnn.boards.top import BoardTop
    from rfsnn.rtl.learner import Learner

    for t in TARGETS.values():
        BoardTop(t.family, t.cfg, t.neuron_lanes, t.sample_lanes, t.freq_mhz * 1e6, t.baud)  # divisor_for checks
        Learner.check_lanes(t.cfg, t.neuron_lanes, t.sample_lanes)
    with pytest.raises(ValueError, match="2%"):
        BoardTop("ecp5", get_target("ulx3s-85f").cfg, 1, 8, 25e6, 3_000_000)  # the ULX3S oscillator alone cannot
    with pytest.raises(ValueError, match="unknown board 'de10'"):
        get_target("de10")


def test_program_refuses_a_build_that_missed_timing_and_names_the_missing_programmer(tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from rfsnn.host import cli

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # no programmer installed
    (tmp_path / "rfsnn.bit").write_bytes(b"\xff" * 64)
    report = {"fits": True, "meets_timing": False, "fmax_mhz": 14.2, "clock_mhz": 15.0}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert cli.main(["program", "--board", "ulx3s-85f", "--out", str(tmp_path)]) == 2
    assert "misses timing (Fmax 14.2 MHz at 15.0 MHz)" in capsys.readouterr().err
    (tmp_path / "report.json").write_text(json.dumps({**report, "meets_timing": True}))
    assert cli.main(["program", "--board", "ulx3s-85f", "--out", str(tmp_path)]) == 3
    assert "apt-get install openfpgaloader" in capsys.readouterr().err


def test_the_design_clock_is_not_nextpnrs_own_net():
    log = """Info: Max frequency for clock '$PACKER_GND_NET_$glb_clk': 45.55 MHz (PASS at 12.00 MHz)
Info: Max frequency for clock              'cd_sync.clk': 11.23 MHz (FAIL at 12.00 MHz)
"""  # the iCEBreaker build's last two lines
    clocks = parse_nextpnr_log(log, "ice40")["clocks"]
    assert design_clock(clocks, 12.0) == {"fmax_mhz": 11.23, "target_mhz": 12.0, "pass": False}
    assert design_clock(clocks, 15.0) is None
