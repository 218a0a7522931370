"""rtl.factors.DirectionFactors: the factors of every direction equal the golden model's, also on replay."""
import pytest

from rfsnn.rtl.learner.factors import DirectionFactors
from rfsnn.sim.contract.config import DeviceConfig, StepParams
from rfsnn.sim.golden import GoldenModel


async def draw_step(ctx, dut, cfg, sp, after_each=lambda k: None):
    """Seed the stream as a TRAIN_STEP does, then draw each direction of sp in turn (after_each(k) when
    direction k is drawn)."""
    ctx.set(dut.seed, sp.seed)
    ctx.set(dut.load, 1)
    await ctx.tick()
    ctx.set(dut.load, 0)
    ctx.set(dut.gauss4, sp.noise == "gauss4")
    ctx.set(dut.layerwise, sp.scope == "layerwise")
    for k in range(sp.directions):
        ctx.set(dut.layer, (sp.layer_start + k) % cfg.n_layers)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        after_each(k)


@pytest.mark.parametrize("noise,scope", [("rademacher", "global"), ("gauss4", "global"),
                                         ("rademacher", "layerwise"), ("gauss4", "layerwise")])
def test_factors_equal_golden_directions(noise, scope, simulate):
    cfg = DeviceConfig(layers=(2, 6, 4, 1))
    sp = StepParams(seed=0xC0FFEE, directions=4, noise=noise, scope=scope, layer_start=1)
    expected, _ = GoldenModel(cfg).directions(sp)
    dut = DirectionFactors(cfg)
    seen = []

    async def bench(ctx):
        for _replay in range(2):  # the update pass replays the same seed: same factors
            got_pass = []
            await draw_step(ctx, dut, cfg, sp, lambda k: got_pass.append(
                {l: ([ctx.get(getattr(dut, f"a{l}")[n]) for n in range(o)],
                     [ctx.get(getattr(dut, f"b{l}")[n]) for n in range(i + 1)])
                 for l, (o, i) in enumerate(cfg.layer_shapes)}))
            seen.append(got_pass)

    simulate(dut, bench)
    for got_pass in seen:
        for k, exp in enumerate(expected):
            for l, (a, b) in exp.items():  # the layers direction k perturbs
                assert got_pass[k][l] == (a.tolist(), b.tolist()), f"direction {k}, layer {l}"


@pytest.mark.parametrize("noise,scope,step_frac", [("rademacher", "global", 8), ("gauss4", "layerwise", 5)])
def test_rest_offers_the_rounding_bits_a_group_per_transfer(noise, scope, step_frac, simulate):
    """After the step's directions, `rest` gives the stream's next bits step_frac at a time, the first in
    bit 0 (the stochastic-rounding groups of the weights in canonical order), also with stalls between."""
    from rfsnn.sim.contract import lfsr

    cfg = DeviceConfig(layers=(2, 5, 3, 1), step_frac=step_frac)
    sp = StepParams(seed=0xFACADE, directions=3, noise=noise, scope=scope, layer_start=2)
    _, n_bits = GoldenModel(cfg).directions(sp)
    dut = DirectionFactors(cfg, registers=False)
    groups = []

    async def bench(ctx):
        await draw_step(ctx, dut, cfg, sp)
        for n in range(12):
            take = n % 3 != 2  # every third clock a stall
            ctx.set(dut.rest.ready, int(take))
            assert ctx.get(dut.rest.valid)
            if take:
                groups.append(ctx.get(dut.rest.payload))
            await ctx.tick()

    simulate(dut, bench)
    bits = lfsr.stream_bits(sp.seed, n_bits + len(groups) * step_frac, cfg.lfsr_width, cfg.lfsr_taps)[n_bits:]
    assert groups == [sum(int(b) << i for i, b in enumerate(bits[g * step_frac:(g + 1) * step_frac]))
                      for g in range(len(groups))]
