"""rtl.lif.LIFLanes and rtl.fixed against the golden element-wise LIF step, in Amaranth's simulator."""
import numpy as np
import pytest

from rfsnn.rtl.learner.lif import LIFLanes
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden import lif_update


def vectors(cfg, n, rng):
    """Random membrane/current pairs, with the rails and the threshold neighbourhood over-represented."""
    lo, hi = cfg.u_range
    th = cfg.threshold_q
    corners = np.array([lo, lo + 1, -1, 0, 1, th - 1, th, th + 1, hi - 1, hi])
    u = rng.integers(lo, hi + 1, size=n)
    cur = rng.integers(lo, hi + 1, size=n)
    small = rng.random(n) < 0.5  # most real currents are near the threshold scale
    u[small] = rng.integers(-4 * th, 4 * th, size=small.sum())
    cur[small] = rng.integers(-2 * th, 2 * th, size=small.sum())
    pick = rng.random(n) < 0.15
    u[pick] = rng.choice(corners, size=pick.sum())
    pick = rng.random(n) < 0.15
    cur[pick] = rng.choice(corners, size=pick.sum())
    return u, cur


@pytest.mark.parametrize("leak_shift,u_bits,lanes", [(3, 24, 4), (1, 18, 3), (6, 20, 1)])
def test_lanes_equal_golden(leak_shift, u_bits, lanes, responses):
    cfg = DeviceConfig(leak_shift=leak_shift, u_bits=u_bits)
    rng = np.random.default_rng(leak_shift * 100 + u_bits)
    u, cur = vectors(cfg, 600 * lanes, rng)
    exp_u, exp_s = lif_update(u, cur, cfg)
    dut = LIFLanes(cfg, lanes)

    def drive(ctx, start):
        for i in range(lanes):
            ctx.set(dut.u[i], int(u[start + i]))
            ctx.set(dut.cur[i], int(cur[start + i]))

    def read(ctx):
        return [(ctx.get(dut.u_next[i]), (ctx.get(dut.spike) >> i) & 1) for i in range(lanes)]

    starts = range(0, len(u), lanes)
    mismatches = []
    for start, lanes_got in zip(starts, responses(dut, starts, drive, read)):
        for i, got in enumerate(lanes_got):
            k = start + i
            if got != (int(exp_u[k]), int(exp_s[k])):
                mismatches.append((int(u[k]), int(cur[k]), got, (int(exp_u[k]), int(exp_s[k]))))
    assert not mismatches, f"{len(mismatches)} mismatches, first (u, cur, got, expected): {mismatches[0]}"
    # The vectors must exercise both outcomes of the compare and both rails of the saturation.
    raw = u - (u >> leak_shift) + cur
    assert exp_s.any() and not exp_s.all()
    assert (raw > cfg.u_range[1]).any() and (raw < cfg.u_range[0]).any()
