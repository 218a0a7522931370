"""The batch stream: which samples of the device's training set each step of TRAIN_STEPS trains on, and
with which noise seed (docs/fixed-point.md section 7).

A second LFSR, of the same width and taps as the noise generator, with its own state (Reg.DATA_SEED),
emits 32-bit words, each of 32 consecutive output bits, least significant first. A step with batch B
takes B + 1 words: word 0 is the step's noise seed (Reg.SEED), word 1 + b picks sample b of the batch as
`((word >> 8) * n) >> 24` (its top DRAW_BITS bits scaled to 0..n-1, n = Reg.SAMPLES). The register then
stands 32 (B + 1) clocks on, where the next step starts. The host computes the same draws when it
streams a set too large for the device, so both modes train on the same batches, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import lfsr
from .config import DRAW_BITS, DeviceConfig

WORD_BITS = 32


def words_per_step(batch: int) -> int:
    return batch + 1


@lru_cache(maxsize=64)
def _jump_columns(n: int, width: int, taps: int) -> tuple[int, ...]:
    """Column j: the state n clocks after the state with only bit j set (the register is linear)."""
    cols = []
    for j in range(width):
        s = 1 << j
        for _ in range(n):
            s = lfsr.step(s, taps)[1]
        cols.append(s)
    return tuple(cols)


def advance(state: int, clocks: int, cfg: DeviceConfig) -> int:
    """The register `clocks` clocks after `state` (seeded as the device seeds it: zero substituted)."""
    s = lfsr.guard_seed(state, cfg.lfsr_width)
    out = 0
    for j, col in enumerate(_jump_columns(clocks, cfg.lfsr_width, cfg.lfsr_taps)):
        if s >> j & 1:
            out ^= col
    return out


def stream_words(state: int, count: int, cfg: DeviceConfig) -> np.ndarray:
    """The first `count` 32-bit words of the stream from `state` (uint64 array)."""
    bits = lfsr.stream_bits(state, count * WORD_BITS, cfg.lfsr_width, cfg.lfsr_taps).reshape(count, WORD_BITS)
    return (bits.astype(np.uint64) << np.arange(WORD_BITS, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def sample_index(word, n: int):
    """A stream word -> a sample index in 0..n-1 (works element-wise on arrays)."""
    top = np.asarray(word, np.uint64) >> np.uint64(WORD_BITS - DRAW_BITS)
    return ((top * np.uint64(n)) >> np.uint64(DRAW_BITS)).astype(np.int64)


@dataclass(frozen=True)
class StepDraw:
    seed: int  # the step's noise seed
    indices: np.ndarray  # (batch,) sample indices into the training set
    next_state: int  # the stream's state for the following step


def draw_step(state: int, n: int, batch: int, cfg: DeviceConfig) -> StepDraw:
    """One step's draw from the stream state `state` over a set of n samples."""
    words = stream_words(state, words_per_step(batch), cfg)
    return StepDraw(int(words[0]), sample_index(words[1:], n),
                    advance(state, WORD_BITS * words_per_step(batch), cfg))


def state_after(state: int, steps: int, batch: int, cfg: DeviceConfig) -> int:
    """The stream's state after `steps` steps of batch `batch` from `state` (where the next run starts)."""
    for _ in range(steps):
        state = advance(state, WORD_BITS * words_per_step(batch), cfg)
    return state


def layer_start_after(layer_start: int, steps: int, directions: int, n_layers: int) -> int:
    """Reg.LAYER_START after `steps` steps of a run: each step moves it on by K, modulo the layers."""
    return (layer_start + steps * directions) % n_layers
