"""The batch stream (sim/contract/streams.py, docs/fixed-point.md section 7) against its definition: the
LFSR clocked bit by bit, words of 32 output bits least significant first, indices scaled from the top
24 bits."""
import numpy as np
import pytest

from rfsnn.sim.contract import lfsr, streams
from rfsnn.sim.contract.config import DeviceConfig

CFG = DeviceConfig()


@pytest.mark.parametrize("state", [0, 1, 0xDEADBEEF, (1 << 32) - 1])
def test_words_and_jumps_are_the_register_clocked_bit_by_bit(state):
    bits = lfsr.stream_reference(state, 5 * 32, CFG.lfsr_width, CFG.lfsr_taps)
    want = [sum(int(b) << i for i, b in enumerate(bits[32 * k:32 * k + 32])) for k in range(5)]
    assert streams.stream_words(state, 5, CFG).tolist() == want
    s = lfsr.guard_seed(state, CFG.lfsr_width)
    for _ in range(100):
        s = lfsr.step(s, CFG.lfsr_taps)[1]
    assert streams.advance(state, 100, CFG) == s


def test_a_step_takes_its_seed_and_batch_then_moves_on():
    draw = streams.draw_step(12345, 1000, 7, CFG)
    words = streams.stream_words(12345, 8, CFG)
    assert draw.seed == words[0]
    assert draw.indices.tolist() == [int((w >> 8) * 1000 >> 24) for w in words[1:]]
    assert draw.next_state == streams.advance(12345, 8 * 32, CFG) == streams.state_after(12345, 1, 7, CFG)
    # the next step continues the same stream
    assert streams.draw_step(draw.next_state, 1000, 7, CFG).seed == streams.stream_words(12345, 9, CFG)[8]


@pytest.mark.parametrize("n", [1, 3, 4096, 32768])
def test_indices_cover_the_set_and_stay_in_it(n):
    assert streams.sample_index(0, n) == 0 and streams.sample_index((1 << 32) - 1, n) == n - 1
    tops = np.arange(0, 1 << 24, 97, dtype=np.uint64) << np.uint64(8)
    idx = streams.sample_index(tops, n)
    assert idx.min() == 0 and idx.max() <= n - 1 and np.all(np.diff(idx) >= 0)  # monotone in the word
    if n <= 4096:
        assert len(np.unique(idx)) == n  # every sample can be drawn
