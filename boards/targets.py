"""The boards rfsnn builds for, each on its amaranth-boards platform, with a default device that fits.

A target names the platform, the FPGA family (for the PLL and the report), how the host reaches the
device (the board's FTDI UART), the clock the design runs at, and the default network and lanes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rfsnn.sim.contract.config import DeviceConfig


@dataclass(frozen=True)
class BoardTarget:
    name: str
    platform: str  # "module:Class" in amaranth_boards
    family: str  # "ice40" or "ecp5"
    freq_mhz: float  # default clock of the design (a PLL makes it when it is not the oscillator's)
    cfg: DeviceConfig = field(default_factory=DeviceConfig)
    neuron_lanes: int = 1
    sample_lanes: int = 8
    baud: int = 3_000_000
    programmer: tuple[str, ...] = ("openFPGALoader",)
    link: str = "uart"  # or "usb-acm": a USB serial port in the gateware (boards/orangecrab.py)
    serial_crc: bool = False  # the link's CRC one bit per clock: smaller, a little slower (rtl/link/framing.py)
    note: str = ""

    def make_platform(self):
        import importlib

        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)()

    @property
    def bitstream_ext(self) -> str:
        return "bin" if self.family == "ice40" else "bit"


# The task's default network (2-64-1, T = 16) on the ECP5 boards. The UP5K's 5280 logic cells hold the
# learner's control logic only just (docs/boards.md): its default is a small device with a 32-bit loss
# and 16-bit steps, and no training set (its host streams every batch: no drawer logic). Trained on
# mexican-hat (`rfsnn train --device-config` with this configuration) it gives the same weights, bit for
# bit, as the default widths: neither register saturates there.
_SMALL = DeviceConfig(layers=(2, 16, 1), t_steps=8, max_batch=64, max_directions=4, loss_bits=32, step_bits=16,
                      max_samples=0)

TARGETS = {t.name: t for t in [
    BoardTarget("icebreaker", "icebreaker:ICEBreakerPlatform", "ice40", 12.0, _SMALL, 1, 1,
                programmer=("iceprog", "openFPGALoader"), serial_crc=True,
                note="iCE40UP5K; UART on the FT2232H's second port (interface B) at 3 Mbaud"),
    # The clock needs a 3 Mbaud divisor (a multiple of 3 MHz within 2%) the PLL reaches from 25 MHz:
    # 54.17 MHz (325/6, divisor 18, 0.3% fast). Measured post-route (docs/boards.md): the ULX3S-12F at 1x2
    # 61.3 MHz (13% margin), the 25F at 1x16 62.0 MHz (14%; 50 of its 56 block RAMs). The 45F and 85F keep
    # 15 MHz at 1x8 until their builds at more lanes are measured.
    *[BoardTarget(f"ulx3s-{size}f", f"ulx3s:ULX3S_{size.upper()}F_Platform", "ecp5",
                  325 / 6 if size in ("12", "25") else 15.0,
                  sample_lanes={"12": 2, "25": 16}.get(size, 8),
                  note=f"ECP5 LFE5U-{size.upper()}F; UART on the FT231X at 3 Mbaud; 25 MHz oscillator, PLL")
      for size in ("12", "25", "45", "85")],
    BoardTarget("orangecrab-25f", "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "ecp5", 15.0,
                programmer=("dfu-util",), link="usb-acm",
                note="ECP5 LFE5U-25F; USB CDC-ACM in the gateware (luna-usb); 48 MHz oscillator, PLL"),
]}


def get_target(name: str) -> BoardTarget:
    if name not in TARGETS:
        raise ValueError(f"unknown board {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]
