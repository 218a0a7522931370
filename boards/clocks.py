"""PLL settings for a requested clock: iCE40 (SB_PLL40_PAD) and ECP5 (EHXPLLL).

Each solver searches the divider space for the output frequency nearest the request within the
family's limits (input after the reference divider, VCO) and returns the dividers with the frequency
they give; the board top then builds the instance. The limits are those of Lattice's datasheets as
used by icepll and ecppll.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PLLSetting:
    fin: float
    fout: float  # what the dividers give (the nearest reachable to the request)
    params: dict


def ice40_pll(fin: float, fout: float) -> PLLSetting:
    """SB_PLL40 in SIMPLE feedback: fout = fin * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ); the divided
    reference fin / (DIVR + 1) within 10-133 MHz, the VCO fin * (DIVF + 1) / (DIVR + 1) within 533-1066 MHz."""
    best = None
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = vco / (1 << divq)
                if best is None or abs(f - fout) < abs(best[0] - fout):
                    filter_range = next(i for i, lim in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 1e12)) if pfd < lim)
                    best = (f, dict(DIVR=divr, DIVF=divf, DIVQ=divq, FILTER_RANGE=filter_range))
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {fout / 1e6:g} MHz from {fin / 1e6:g} MHz")
    return PLLSetting(fin, best[0], best[1])


def ecp5_pll(fin: float, fout: float) -> PLLSetting:
    """EHXPLLL with CLKOP feedback: fout = fin * CLKFB_DIV / CLKI_DIV; the divided reference within
    3.125-400 MHz, the VCO fout * CLKOP_DIV within 400-800 MHz."""
    best = None
    for clki in range(1, 129):
        pfd = fin / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            f = pfd * clkfb
            if not 3.125e6 <= f <= 400e6:
                continue
            for clkop in range(1, 129):
                if 400e6 <= f * clkop <= 800e6:
                    if best is None or abs(f - fout) < abs(best[0] - fout):
                        best = (f, dict(CLKI_DIV=clki, CLKFB_DIV=clkfb, CLKOP_DIV=clkop))
                    break
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {fout / 1e6:g} MHz from {fin / 1e6:g} MHz")
    return PLLSetting(fin, best[0], best[1])
