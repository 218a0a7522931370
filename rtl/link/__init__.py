"""The host link in gateware (docs/protocol.md): uart (the serial line), framing (SLIP and CRC-32,
decoder and encoder) and dispatcher (a checked frame's requests as learner commands, one reply per
frame). rtl/top.py joins them to the learner."""
