"""The one configuration object of the device, shared by the golden model and the RTL.

Everything that changes what the chip computes lives here (sizes, widths, T, leak, threshold, LFSR);
what the host chooses per training step (seed, K, sigma, gain, perturbation mode) is `StepParams`.
docs/fixed-point.md is the prose form of the same contract; change the three together.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

# Right-shifting Galois LFSRs with maximal-length (primitive) feedback polynomials. The mask has bit i set
# when x^(i+1) is a term of the polynomial besides x^0; for 32 bits: x^32 + x^22 + x^2 + x + 1.
MAXIMAL_TAPS = {
    8: 0xB8,
    16: 0xB400,
    24: 0xE10000,
    32: 0x80200003,
}
# A training run on the device's own set (TRAIN_STEPS) takes 1..MAX_RUN_STEPS steps; the set holds at most
# MAX_SAMPLES_LIMIT samples (DATA_SEEK's u16 index). Batch indices take DRAW_BITS bits of a stream word.
MAX_RUN_STEPS = 256
MAX_SAMPLES_LIMIT = 1 << 15
DRAW_BITS = 24
# A seed of zero would freeze an LFSR; it is replaced by this constant (masked to the width).
ZERO_SEED_SUBSTITUTE = 0xACE1_2468

NOISE_KINDS = ("rademacher", "gauss4")
DIFFERENCES = ("central", "forward")
SCOPES = ("global", "layerwise")


class ConfigError(ValueError):
    """A configuration or step parameter the device cannot honour."""


def _signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class DeviceConfig:
    """Sizes, number formats and constants of one device build.

    Formats are signed two's complement `Q(bits, frac)`: an integer q stands for q / 2**frac.
    Weights, biases, membrane potentials, currents, outputs and targets share `w_frac` fractional bits,
    so the hidden-layer currents are plain sums of weights (no shifter in the event path).
    """

    layers: tuple[int, ...] = (2, 64, 1)  # inputs, LIF hidden layers..., linear readout outputs
    t_steps: int = 16  # time steps per sample; a power of two so the readout mean is a shift
    leak_shift: int = 3  # lambda = 1 - 2**-leak_shift, applied as U - (U >> leak_shift)
    threshold: float = 1.0  # firing threshold theta, in real units (must be exact in w_frac bits)

    x_bits: int = 16  # inputs: coordinates scaled to [-1, 1]
    x_frac: int = 14
    w_bits: int = 16  # weights and biases (one RAM word each)
    w_frac: int = 12
    u_bits: int = 24  # membrane potential and input currents (fractional bits = w_frac)
    y_bits: int = 16  # readout output and targets (fractional bits = w_frac)
    loss_bits: int = 48  # squared-error accumulator, unsigned, saturating

    step_frac: int = 8  # fractional bits of the update step, in weight LSBs; also the stochastic-rounding bits
    step_bits: int = 24  # signed width of the per-direction step
    gain_bits: int = 16  # unsigned mantissa of the step gain (host-computed from lr, sigma, batch, K)

    lfsr_width: int = 32
    lfsr_taps: int = MAXIMAL_TAPS[32]

    max_directions: int = 32  # K limit: the device keeps K step values (and may cache K rank-one factors)
    max_batch: int = 256  # sample memory depth
    # The training set the device holds (docs/fixed-point.md section 7): TRAIN_STEPS draws each step's
    # batch from it. 0: no set memory; the host streams every batch (DATA_* and TRAIN_STEPS refused).
    max_samples: int = 4096

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        self.validate()

    # ---- derived integer constants -------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of weight layers (hidden LIF layers plus the readout)."""
        return len(self.layers) - 1

    @property
    def t_shift(self) -> int:
        return self.t_steps.bit_length() - 1

    @property
    def threshold_q(self) -> int:
        return int(round(self.threshold * (1 << self.w_frac)))

    @property
    def w_range(self) -> tuple[int, int]:
        return _signed_range(self.w_bits)

    @property
    def u_range(self) -> tuple[int, int]:
        return _signed_range(self.u_bits)

    @property
    def y_range(self) -> tuple[int, int]:
        return _signed_range(self.y_bits)

    @property
    def x_range(self) -> tuple[int, int]:
        return _signed_range(self.x_bits)

    @property
    def step_range(self) -> tuple[int, int]:
        return _signed_range(self.step_bits)

    @property
    def loss_max(self) -> int:
        return (1 << self.loss_bits) - 1

    @property
    def sample_bits(self) -> int:
        """Bits of one stored sample: its n0 inputs and nL targets."""
        return self.layers[0] * self.x_bits + self.layers[-1] * self.y_bits

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(n_out, n_in) of each weight layer."""
        return [(self.layers[i + 1], self.layers[i]) for i in range(self.n_layers)]

    @property
    def n_params(self) -> int:
        return sum(o * (i + 1) for o, i in self.layer_shapes)

    def validate(self) -> None:
        L = self.layers
        if len(L) < 3 or min(L) < 1:
            raise ConfigError(f"layers must be (inputs, hidden..., outputs) with at least one hidden layer, got {L}")
        if self.t_steps < 1 or self.t_steps & (self.t_steps - 1):
            raise ConfigError(f"t_steps must be a power of two (the readout mean is a shift), got {self.t_steps}")
        if not 1 <= self.leak_shift <= 15:
            raise ConfigError(f"leak_shift must be in 1..15, got {self.leak_shift}")
        if self.threshold * (1 << self.w_frac) != self.threshold_q or self.threshold_q <= 0:
            raise ConfigError(f"threshold {self.threshold} is not a positive multiple of 2**-{self.w_frac}")
        if self.threshold_q > self.u_range[1]:
            raise ConfigError(f"threshold {self.threshold} does not fit the {self.u_bits}-bit membrane")
        if self.u_bits < self.w_bits or self.y_bits > self.u_bits:
            raise ConfigError("u_bits must be >= w_bits and >= y_bits")
        if self.lfsr_taps >> self.lfsr_width or not self.lfsr_taps >> (self.lfsr_width - 1):
            raise ConfigError(f"lfsr_taps {self.lfsr_taps:#x} must have bit {self.lfsr_width - 1} set and nothing above")
        if not 0 <= self.max_samples <= MAX_SAMPLES_LIMIT:
            raise ConfigError(f"max_samples must be in 0..{MAX_SAMPLES_LIMIT} (a u16 sample index on the link), "
                              f"got {self.max_samples}")
        if not 1 <= self.step_frac < self.step_bits:
            raise ConfigError("step_frac must be in 1..step_bits-1")
        # The golden model computes sums of integers in float64, exact while every partial sum is
        # below 2**53; these bounds are the worst cases of the three sums it forms.
        widest = max(
            self.x_bits + self.w_bits + math.ceil(math.log2(L[0] + 1)),
            self.w_bits + math.ceil(math.log2(max(L[1:-1]) + 2)) + self.t_shift,
            2 * (self.y_bits + 1) + math.ceil(math.log2(self.max_batch * L[-1])),
        )
        if widest >= 53:
            raise ConfigError(f"widths too large for exact float64 sums in the golden model ({widest} bits)")

    # ---- cost model (what each option costs in hardware) ---------------------------------------
    def cost(self) -> dict:
        """Memory bits and multipliers this configuration asks of the hardware, for docs and reports."""
        hidden = self.layers[1:-1]
        perturb_bits = sum(o + i + 1 for o, i in self.layer_shapes)  # rank-one factors of one direction
        return {
            "params": self.n_params,
            "weight_memory_bits": self.n_params * self.w_bits,
            "membrane_memory_bits_per_sample": sum(hidden) * self.u_bits,
            "sample_memory_bits": self.max_batch * self.sample_bits,
            "training_set_memory_bits": self.max_samples * self.sample_bits,
            "noise_bits_per_direction_rademacher": perturb_bits,
            "noise_bits_per_direction_gauss4": 4 * perturb_bits,
            "factor_cache_bits_rademacher": self.max_directions * perturb_bits,
            "step_register_bits": self.max_directions * self.step_bits,
            "input_layer_multiplies_per_sample": self.layers[0] * self.layers[1],
            "multipliers_min": 1,  # the input layer and the step gain can share one multiplier
            "momentum_memory_bits_if_added": self.n_params * self.w_bits,
        }

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceConfig":
        """A configuration from its to_dict() form. Refuses (ConfigError) anything else: not a JSON
        object, unknown fields, values of the wrong type (a string, a bool, a fraction where an integer
        belongs); missing fields take their defaults."""
        if not isinstance(d, dict):
            raise ConfigError(f"a device configuration is a JSON object of DeviceConfig fields, got {type(d).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ConfigError(f"unknown DeviceConfig fields: {sorted(unknown)} (known: {', '.join(known)})")

        def integer(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for k, v in d.items():
            if k == "layers":
                if not (isinstance(v, (list, tuple)) and v and all(integer(n) and n >= 1 for n in v)):
                    raise ConfigError(f"layers must be a list of positive integers such as [2, 64, 1], got {v!r}")
            elif k == "threshold":
                if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                    raise ConfigError(f"threshold must be a number, got {v!r}")
            elif not integer(v):
                raise ConfigError(f"{k} must be an integer, got {v!r}")
        return cls(**{k: (tuple(v) if k == "layers" else v) for k, v in d.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass(frozen=True)
class StepParams:
    """What the host sends with one training step. All integers, as they cross the link."""

    seed: int  # LFSR seed of this step (32-bit; zero is replaced by ZERO_SEED_SUBSTITUTE)
    directions: int = 4  # K
    sigma: int = 64  # perturbation scale in weight LSBs (64 = 2**-6 at w_frac = 12)
    gain_mant: int = 1 << 15  # step gain = gain_mant * 2**-gain_shift (step units per loss unit)
    gain_shift: int = 40
    clip: int = 1 << 16  # |step| limit, in step units (weight LSB * 2**-step_frac)
    noise: str = "rademacher"
    difference: str = "central"
    scope: str = "global"
    layer_start: int = 0  # layer-wise scope: direction k perturbs layer (layer_start + k) mod n_layers
    stochastic_rounding: bool = True

    def validate(self, cfg: DeviceConfig) -> None:
        if self.noise not in NOISE_KINDS:
            raise ConfigError(f"noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.difference not in DIFFERENCES:
            raise ConfigError(f"difference must be one of {DIFFERENCES}, got {self.difference!r}")
        if self.scope not in SCOPES:
            raise ConfigError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        limits = register_limits(cfg)
        for name in ("directions", "sigma", "gain_mant", "gain_shift", "clip", "layer_start", "seed"):
            lo, hi = limits[name]
            if not lo <= getattr(self, name) <= hi:
                raise ConfigError(f"{name} must be in {lo}..{hi}, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def register_limits(cfg: DeviceConfig) -> dict[str, tuple[int, int]]:
    """The values each step register takes, inclusive, by the name of its StepParams field ("batch" and
    "mode" besides): what StepParams.validate checks, and what both devices refuse with RANGE (the
    gateware's SET, GoldenDevice's). The registers themselves are contract.commands.Reg."""
    return {
        "batch": (1, cfg.max_batch),
        "seed": (0, (1 << 32) - 1),  # zero is replaced by ZERO_SEED_SUBSTITUTE
        "directions": (1, cfg.max_directions),
        "sigma": (1, cfg.w_range[1] // 4),  # in weight LSBs
        "gain_mant": (0, (1 << cfg.gain_bits) - 1),
        "gain_shift": (1, 63),
        "clip": (0, cfg.step_range[1]),
        "mode": (0, 15),  # the four contract.commands.Mode flags
        "layer_start": (0, cfg.n_layers - 1),
        "samples": (1, cfg.max_samples),  # the training set's size (empty range without a set memory)
        "data_seed": (0, (1 << 32) - 1),  # the batch stream's state; zero is replaced by ZERO_SEED_SUBSTITUTE
    }


def forward_passes(directions: int, difference: str) -> int:
    """Forward passes over the batch in one training step: 2K for central differences, K + 1 for forward."""
    return 2 * directions if difference == "central" else directions + 1


def gain_for(lr: float, sigma_lsb: int, batch: int, directions: float, central: bool,
             cfg: DeviceConfig) -> tuple[int, int]:
    """Encode the float update rule as the device's integer gain.

    The float rule is w -= lr * mean_k[(L+ - L-) / (2 sigma)] v_k with L the batch-mean squared error;
    on the device the loss is the batch *sum* in 2*w_frac fractional bits and the step is in
    2**-step_frac weight LSBs, which gives step = dL_int * lr * 2**step_frac / (c * batch * sigma_lsb * K).
    Returned as (mantissa, shift) with the mantissa normalised into the top bit of gain_bits.
    """
    c = 2 if central else 1
    g = lr * (1 << cfg.step_frac) / (c * batch * sigma_lsb * directions)
    if g <= 0:
        return 0, 1
    shift = cfg.gain_bits - 1 - math.floor(math.log2(g))
    mant = int(round(g * 2.0**shift))
    if mant >= 1 << cfg.gain_bits:
        mant, shift = mant >> 1, shift - 1
    if not 1 <= shift <= 63:
        raise ConfigError(f"learning rate {lr} gives a gain {g:.3g} outside the device's range")
    return mant, shift
