"""rfsnn gateware (Amaranth), built from the contract (rfsnn.sim.contract):

- learner/: the learner behind one command stream, and its blocks;
- link/: the host link (UART, framing, dispatcher);
- commands.py: the command and response stream layouts between the two;
- top.py: the device (link + learner) behind a byte stream, and at its UART pins.

docs/rtl.md describes them."""
