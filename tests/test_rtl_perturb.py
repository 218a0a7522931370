"""rtl.perturb.PerturbedRead against golden.perturbed, for both noise kinds and the rails."""
import numpy as np
import pytest

from rfsnn.rtl.learner.perturb import PerturbedRead
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden import perturbed


@pytest.mark.parametrize("noise", ["rademacher", "gauss4"])
def test_equals_golden(noise, responses):
    cfg = DeviceConfig()
    lanes = 4
    rng = np.random.default_rng(len(noise))
    wlo, whi = cfg.w_range
    values = [-1, 1] if noise == "rademacher" else [-2, -1, 0, 1, 2]
    rows = 700
    w = rng.integers(wlo, whi + 1, size=(rows, lanes))
    w[rng.random((rows, lanes)) < 0.2] = whi
    w[rng.random((rows, lanes)) < 0.2] = wlo
    a = rng.choice(values, size=(rows, lanes))
    b = rng.choice(values, size=rows)
    sig = rng.choice([64, -64, 1, -1, 0, whi // 4, -(whi // 4)], size=rows)
    dut = PerturbedRead(cfg, lanes)

    def drive(ctx, r):
        for i in range(lanes):
            ctx.set(dut.w[i], int(w[r, i]))
            ctx.set(dut.a[i], int(a[r, i]))
        ctx.set(dut.b, int(b[r]))
        ctx.set(dut.signed_sigma, int(sig[r]))

    got = responses(dut, range(rows), drive, lambda ctx: [ctx.get(dut.w_pert[i]) for i in range(lanes)])
    # golden.perturbed takes a whole [W | b] matrix: one output-neuron row per lane, one column per read row.
    for r in range(rows):
        expect = perturbed(w[r][:, None], a[r], np.array([b[r]]), int(sig[r]), cfg)[:, 0]
        assert got[r] == expect.tolist(), (w[r], a[r], b[r], sig[r])
    flat = np.array(got)
    assert (flat == whi).any() and (flat == wlo).any()
