"""NoiseLFSR on a Verilog simulator: every consumed word equals the golden noise stream.

Parameters come from the environment (set by the pytest wrapper): LFSR_WIDTH, LFSR_LANES, SEEDS
(comma-separated), WORDS (words consumed per seed).
"""
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from rfsnn.sim.contract import lfsr as model
from rfsnn.sim.contract.config import MAXIMAL_TAPS


@cocotb.test()
async def stream_matches_golden(dut):
    width, lanes = int(os.environ["LFSR_WIDTH"]), int(os.environ["LFSR_LANES"])
    words = int(os.environ.get("WORDS", "200"))
    seeds = [int(s, 0) for s in os.environ["SEEDS"].split(",")]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.load.value = 0
    dut.bits__ready.value = 0
    fe = FallingEdge(dut.clk)
    await fe
    dut.rst.value = 0
    for seed in seeds:
        dut.seed.value = seed
        dut.load.value = 1
        await fe
        dut.load.value = 0
        expect = model.stream_bits(seed, words * lanes, width, MAXIMAL_TAPS[width])
        for w in range(words):
            stall = w % 7 == 6
            dut.bits__ready.value = 0 if stall else 1
            word = int(dut.bits__payload.value)
            got = np.array([(word >> i) & 1 for i in range(lanes)], np.uint8)
            exp = expect[w * lanes:(w + 1) * lanes]
            assert np.array_equal(got, exp), f"seed {seed:#x}, word {w}: got {got}, expected {exp}"
            await fe
            if stall:  # a stalled word is offered again
                assert int(dut.bits__payload.value) == word
                dut.bits__ready.value = 1
                await fe
