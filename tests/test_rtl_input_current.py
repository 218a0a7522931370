"""rtl.input_current.InputCurrent against the golden input-layer current, rails included."""
import numpy as np
import pytest

from rfsnn.rtl.input_current import InputCurrent
from rfsnn.sim.config import DeviceConfig
from rfsnn.sim.golden import input_current

from combsim import responses


@pytest.mark.parametrize("n0,u_bits", [(1, 24), (2, 24), (3, 18)])
def test_equals_golden(n0, u_bits):
    cfg = DeviceConfig(layers=(n0, 8, 1), u_bits=u_bits)
    rng = np.random.default_rng(n0 * 31 + u_bits)
    n = 1500
    wlo, whi = cfg.w_range
    xlo, xhi = cfg.x_range
    w = rng.integers(wlo, whi + 1, size=(n, n0))
    x = rng.integers(xlo, xhi + 1, size=(n, n0))
    b = rng.integers(wlo, whi + 1, size=n)
    rails = rng.random((n, n0)) < 0.2
    w[rails] = rng.choice([wlo, whi], size=rails.sum())
    x[rails] = rng.choice([xlo, xhi, 1 << (cfg.x_frac - 1), -(1 << (cfg.x_frac - 1))], size=rails.sum())
    expect = input_current(w, b, x, cfg)
    dut = InputCurrent(cfg)

    def drive(ctx, k):
        for j in range(n0):
            ctx.set(dut.w[j], int(w[k, j]))
            ctx.set(dut.x[j], int(x[k, j]))
        ctx.set(dut.bias, int(b[k]))

    got = responses(dut, range(n), drive, lambda ctx: ctx.get(dut.current))
    bad = [(w[k].tolist(), x[k].tolist(), int(b[k]), got[k], int(expect[k])) for k in range(n) if got[k] != expect[k]]
    assert not bad, f"{len(bad)} mismatches, first (w, x, b, got, expected): {bad[0]}"
    if u_bits == 18:  # narrow membrane: the saturation must have acted on both rails
        assert expect.max() == cfg.u_range[1] and expect.min() == cfg.u_range[0]
