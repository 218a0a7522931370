"""The learner's command interface: one command stream in, one response per command out.

This is the boundary the host link drives (a UART frame decoder in hardware, or a simulation
testbench): every command gets exactly one response, so a host always knows where it stands.
Values cross as 64-bit two's complement; `index` selects a register, counter, loss or info field.

Bulk data moves through auto-incrementing pointers, so no command carries an address the
gateware would have to divide:
- parameters in the canonical weight order of docs/fixed-point.md (layer, row, column, bias last):
  PARAM_REWIND, then PARAM_WRITE / PARAM_READ once per parameter;
- samples: SAMPLE_SEEK(b), then SAMPLE_WRITE per field (the n0 inputs, then the nL targets) of
  sample b, b+1, ...; OUTPUT_READ returns y[b, o] in the same order (o fastest);
- the training set: DATA_SEEK(s), then DATA_WRITE per field, the same way.
"""
from __future__ import annotations

from enum import IntEnum

from .config import DeviceConfig

INTERFACE_VERSION = 1
# Field widths of a command (op, index, data) and of a response (status, data), in bits; the gateware
# builds its stream layouts from them (rtl/commands.py).
OP_BITS, INDEX_BITS, DATA_BITS, STATUS_BITS = 8, 16, 64, 8


class Op(IntEnum):
    NOP = 0
    INFO = 1  # index: field of info_words() -> data
    SET = 2  # index: Reg, data: value (checked like StepParams.validate; RANGE and no change if not)
    PARAM_REWIND = 3
    PARAM_WRITE = 4  # data: the next parameter, canonical order
    PARAM_READ = 5  # -> the next parameter
    SAMPLE_SEEK = 6  # data: sample index b
    SAMPLE_WRITE = 7  # data: the next field of the sample pointer (inputs, then targets)
    OUTPUT_READ = 8  # -> the next output y[b, o] of the last INFER (samples beyond its batch keep older values)
    INFER = 9  # forward pass over the loaded batch -> the loss (y readable by OUTPUT_READ)
    TRAIN_STEP = 10  # one training step with the SET parameters -> data = number of losses
    READ_LOSS = 11  # index: pass number of the last step (central: +,- per direction; forward: base, +...)
    READ_STEP = 12  # index: direction -> its clipped scalar step
    READ_COUNTER = 13  # index: Counter
    CLEAR_COUNTERS = 14
    DATA_SEEK = 15  # data: sample index s of the training set (< max_samples)
    DATA_WRITE = 16  # data: the next field of the set pointer (inputs, then targets), as SAMPLE_WRITE
    TRAIN_STEPS = 17  # data: N in 1..MAX_RUN_STEPS steps, batches drawn from the set -> sum of base losses


class Reg(IntEnum):
    BATCH = 0
    SEED = 1
    DIRECTIONS = 2
    SIGMA = 3
    GAIN_MANT = 4
    GAIN_SHIFT = 5
    CLIP = 6
    MODE = 7  # Mode bits
    LAYER_START = 8
    SAMPLES = 9  # n: samples of the training set that TRAIN_STEPS draws from (1..max_samples)
    DATA_SEED = 10  # the batch stream's LFSR state (docs/fixed-point.md section 7)


class Mode(IntEnum):
    GAUSS4 = 1
    FORWARD = 2
    LAYERWISE = 4
    STOCHASTIC_ROUNDING = 8


class Counter(IntEnum):
    CYCLES_BUSY = 0  # clocks spent on INFER and TRAIN_STEP since the last clear
    CYCLES_LAST = 1  # clocks of the last INFER or TRAIN_STEP
    SPIKE_FANOUT = 2  # spikes x their fan-out (next layer's width, the readout's too), as the golden Counters:
    # the additions an event-driven network calls for; not the gateware's operations (the readout works from counts)
    SPIKES = 3  # SPIKES + l: spikes of hidden layer l (only samples of the batch count)


def counter_names(cfg: DeviceConfig) -> list[str]:
    """READ_COUNTER index -> name, as hosts report the counters."""
    return ["cycles_busy", "cycles_last", "spike_fanout"] + [f"spikes{h}" for h in range(cfg.n_layers - 1)]


class Status(IntEnum):
    OK = 0
    RANGE = 1  # a value or index the device cannot take; nothing changed
    UNKNOWN = 2  # not an operation


INFO_FIELDS = ("version", "neuron_lanes", "sample_lanes", "t_steps", "leak_shift", "threshold_q",
               "x_bits", "x_frac", "w_bits", "w_frac", "u_bits", "y_bits", "loss_bits", "step_frac",
               "step_bits", "gain_bits", "lfsr_width", "lfsr_taps", "max_directions", "max_batch",
               "max_samples", "n_layers")  # then layers[0..n_layers]


def mode_bits(noise: str, difference: str, scope: str, stochastic_rounding: bool) -> int:
    return ((Mode.GAUSS4 if noise == "gauss4" else 0) | (Mode.FORWARD if difference == "forward" else 0)
            | (Mode.LAYERWISE if scope == "layerwise" else 0)
            | (Mode.STOCHASTIC_ROUNDING if stochastic_rounding else 0))


def info_words(cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int) -> list[int]:
    """What INFO returns, field by field: everything a host must agree on before it sends data."""
    values = {"version": INTERFACE_VERSION, "neuron_lanes": neuron_lanes, "sample_lanes": sample_lanes,
              "threshold_q": cfg.threshold_q, "n_layers": cfg.n_layers}
    words = [values[f] if f in values else getattr(cfg, f) for f in INFO_FIELDS]
    return words + list(cfg.layers)


def parse_info(words: list[int]) -> tuple[DeviceConfig, int, int]:
    """INFO words -> (DeviceConfig, neuron_lanes, sample_lanes); the inverse of info_words."""
    d = dict(zip(INFO_FIELDS, words))
    layers = tuple(words[len(INFO_FIELDS):len(INFO_FIELDS) + d["n_layers"] + 1])
    w_frac = d["w_frac"]
    cfg = DeviceConfig(layers=layers, threshold=d["threshold_q"] / (1 << w_frac),
                       **{f: d[f] for f in INFO_FIELDS if f not in ("version", "neuron_lanes", "sample_lanes",
                                                                   "threshold_q", "n_layers")})
    return cfg, d["neuron_lanes"], d["sample_lanes"]
