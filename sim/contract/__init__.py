"""The contract: every fact the host, the golden model and the gateware must agree on, in one place,
importable without Amaranth.

- config: DeviceConfig (sizes, number formats, T, leak, LFSR) and StepParams, with their checks and
  the register limits the devices enforce;
- commands: the learner's command interface (Op, Reg, Mode, Counter, Status, INFO fields);
- protocol: the host link (docs/protocol.md) as a sans-IO codec: request codes with their argument and
  reply sizes, statuses, SLIP framing, CRC, MAX_PAYLOAD, the receive window;
- lfsr: the noise generator's bit stream (taps, seeding, leap-forward), which both sides draw from;
- fixed: real <-> fixed-point conversion (quantize, dequantize) and 64-bit two's complement words.
- neuron: the LIF step element-wise, and the first hidden layer's spike trains and counts per current.

docs/fixed-point.md and docs/protocol.md say the same in prose; sim/golden.py computes by it, and
rtl/ builds its tables and layouts from it.
"""
