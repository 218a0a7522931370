"""The learner's cycle model: the clocks an INFER, a TRAIN_STEP or a TRAIN_STEPS run takes, exactly, for
networks with one hidden layer (every board's default), from the gateware's schedule (docs/rtl.md).

These are the clocks the device's CYCLES_LAST counter reports. tests/test_cycles.py checks the model
against the gateware in Amaranth's simulator over shapes, lanes and step options, and the shipped board
configurations on Verilator, so a change to the schedule that costs clocks fails a test until the model
(and docs/rtl.md) says why. Deeper networks take clocks in proportion to their spikes (the event replay),
which this model does not predict: `train_step_cycles` refuses them.
"""
from __future__ import annotations

import dataclasses
import math

from .contract.config import ConfigError, DeviceConfig, StepParams
from .contract.streams import layer_start_after, words_per_step

# Clocks between a chunk's last input item and the readout (IN_DRAIN, then COUNT_DRAIN while the last
# currents pass the execute stage and the spike-count table) and after a readout chunk (OUT_DRAIN).
IN_TO_READOUT = 6
OUT_DRAIN = 3
# The draws (rtl/learner/sequencer.py, StepSequencer._draws) run beside the passes. A draw of D values'
# stream bits that starts at clock s is seen done by the passes at s + D + DRAW_SEEN, and the next draw
# can start at s + D + DRAW_GAP; the first starts at FIRST_DRAW (the clock after TRAIN_STEP's).
FIRST_DRAW, DRAW_SEEN, DRAW_GAP = 1, 2, 2
# From the clock the sequencer waits for direction k's factors (DRAWN) to its passes' start when they are
# drawn already, and from the end of its last pass to DRAWN of the next direction besides StepUnit's
# clocks (STEP_K, STEP_WAIT's last clock, STEP_STORE, the clock the pass's end is seen).
PASS_START, AFTER_PASSES = 1, 4
# A TRAIN_STEPS step's draw (rtl/learner/draw.py, BatchDrawer): its B + 1 stream words, one per clock from
# the clock after the run's command (or the last step's end), then the pipeline's multiply, set-memory
# read and batch write of the last sample; the step starts in the clock of that write.
DRAW_PIPELINE = 3


def loss_lanes(sample_lanes: int) -> int:
    """Samples whose squared errors the loss takes per clock (rtl/learner/forward.py): one per 8 lanes."""
    return max(1, sample_lanes // 8)


def update_drain(cfg: DeviceConfig) -> int:
    """Clocks of the update pass after its last weight is issued: the factor words' register, the delta's
    latency (a second register in the adder tree beyond 8 directions, rtl/learner/update.UpdateDelta) and
    the write-back."""
    return 4 if cfg.max_directions > 8 else 3


def _one_hidden_layer(cfg: DeviceConfig) -> None:
    if cfg.n_layers != 2:
        raise ConfigError(f"the cycle model covers one hidden layer; {cfg.layers} has {cfg.n_layers - 1}")


def forward_pass_cycles(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, loaded: bool = False,
                        store_outputs: bool = False) -> int:
    """One pass over the batch, group by group of S samples: LOAD (S clocks, or 1 when the lanes hold the
    batch's only group already), IN (C1 (n0 + 1)), the drain into the readout, per output chunk OUT
    (n1 + 1) and its drain, per output LOSS (ceil(S / R)) and, in INFER, STORE (S), then GROUP_END;
    (LOSS_DRAIN with S > 1 and) PASS_END once."""
    _one_hidden_layer(cfg)
    N, S = neuron_lanes, sample_lanes
    n0, n1, nL = cfg.layers
    groups = math.ceil(batch / S)
    load = 1 if loaded and groups == 1 else S
    readout = 0
    for c in range(math.ceil(nL / N)):
        outputs = min(N, nL - c * N)
        readout += (n1 + 1) + OUT_DRAIN + outputs * (math.ceil(S / loss_lanes(S)) + (S if store_outputs else 0))
    per_group = load + math.ceil(n1 / N) * (n0 + 1) + IN_TO_READOUT + readout + 1
    # LOSS_DRAIN: the loss registers its differences when it selects among sample lanes
    return groups * per_group + 1 + (1 if S > 1 else 0)


def infer_cycles(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, loaded: bool = False) -> int:
    return forward_pass_cycles(cfg, neuron_lanes, sample_lanes, batch, loaded, store_outputs=True)


def draw_cycles(cfg: DeviceConfig, sp: StepParams, k: int) -> int:
    """Direction k's factors, one stream bit per clock: every layer's (global) or one layer's (layer-wise)."""
    sizes = [o + i + 1 for o, i in cfg.layer_shapes]
    values = sum(sizes) if sp.scope == "global" else sizes[(sp.layer_start + k) % cfg.n_layers]
    return values * (4 if sp.noise == "gauss4" else 1)


def step_unit_cycles(cfg: DeviceConfig, sp: StepParams) -> int:
    """StepUnit: gain_bits multiply steps, gain_shift - 1 shifts, then the rounding and clip."""
    return cfg.gain_bits + sp.gain_shift


def train_step_cycles(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, sp: StepParams,
                      loaded: bool = False) -> int:
    """TRAIN_STEP: (forward differences: the base pass), then per direction its passes and its step, each
    direction's passes starting when its factors are drawn; the draws run ahead, one at a time: with
    one neuron lane direction k + 1's beside direction k's passes, with the factor registers (more neuron
    lanes) once direction k's step is stored. Then the update pass at one weight per clock. `loaded`:
    the lanes hold the batch already (it is one group, and no sample was written since the last pass)."""
    N, S, K = neuron_lanes, sample_lanes, sp.directions

    def pass_(held):
        return forward_pass_cycles(cfg, N, S, batch, held)

    clock = 0
    if sp.difference == "forward":
        clock, loaded = pass_(loaded), True
    waiting = clock  # the clock the sequencer starts to wait for direction k's factors
    draw = FIRST_DRAW  # the clock direction k's draw starts
    for k in range(K):
        drawn = draw + draw_cycles(cfg, sp, k)
        start = max(waiting + PASS_START, drawn + DRAW_SEEN)
        passes = pass_(loaded) + (pass_(True) if sp.difference == "central" else 0)
        loaded = True
        next_waiting = start + passes + AFTER_PASSES + step_unit_cycles(cfg, sp)
        # the next draw: after this one, and once the passes that would read over it are done with it
        draw = max(drawn + DRAW_GAP, (waiting if N == 1 else next_waiting) + 1)
        waiting = next_waiting
    return waiting + cfg.n_params + update_drain(cfg)


def lane_clocks(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, sp: StepParams) -> int:
    """Clocks of a TRAIN_STEP in which the lanes execute an operation: per pass and group of S samples its
    C1 (n0 + 1) input items and, per output chunk, n1 + 1 readout items (every lane works in such a clock,
    a partial group's empty lanes too), and the update pass's n_params weights. The other clocks are
    overhead: loading, drains, the loss, draws, steps (docs/rtl.md, "How busy the array is")."""
    _one_hidden_layer(cfg)
    N, S = neuron_lanes, sample_lanes
    n0, n1, nL = cfg.layers
    per_group = math.ceil(n1 / N) * (n0 + 1) + math.ceil(nL / N) * (n1 + 1)
    passes = 2 * sp.directions if sp.difference == "central" else sp.directions + 1
    return passes * math.ceil(batch / S) * per_group + cfg.n_params


def batch_draw_cycles(batch: int) -> int:
    """The draw of one TRAIN_STEPS step's seed and batch, before its TRAIN_STEP starts."""
    return words_per_step(batch) + DRAW_PIPELINE


def train_steps_cycles(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, batch: int, sp: StepParams,
                       steps: int) -> int:
    """TRAIN_STEPS(steps) with the registers of `sp` (its seed is drawn, and does not change the clocks):
    per step the draw, then TRAIN_STEP on the batch just written (the lanes hold none of it), with
    LAYER_START moved on by K after each step (layer-wise, the draws of the next step's directions)."""
    total = 0
    for s in range(steps):
        at = dataclasses.replace(sp, layer_start=layer_start_after(sp.layer_start, s, sp.directions, cfg.n_layers))
        total += batch_draw_cycles(batch) + train_step_cycles(cfg, neuron_lanes, sample_lanes, batch, at)
    return total
