"""A board's top level: its clock (through a PLL when the design's clock is not the oscillator's), the
device (rtl.top.DeviceTop) on the board's UART pins, and LEDs for `busy` and link errors."""
from __future__ import annotations

from amaranth import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.build import ResourceError
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from rfsnn.rtl.top import DeviceTop
from rfsnn.rtl.link.uart import divisor_for
from rfsnn.sim.contract.config import DeviceConfig

from .clocks import ecp5_pll, ice40_pll


class BoardTop(Elaboratable):
    def __init__(self, family: str, cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, freq_hz: float,
                 baud: int, serial_crc: bool = False):
        self.family, self.cfg, self.freq_hz, self.baud, self.serial_crc = family, cfg, freq_hz, baud, serial_crc
        self.neuron_lanes, self.sample_lanes = neuron_lanes, sample_lanes
        self.divisor = divisor_for(freq_hz, baud)  # refuses a clock that cannot make the baud rate

    def elaborate(self, platform):
        m = Module()
        fin = platform.default_clk_frequency
        if abs(self.freq_hz - fin) > 1:
            self._pll(m, platform, fin)
        m.submodules.device = dev = DeviceTop(self.cfg, self.divisor, self.neuron_lanes, self.sample_lanes,
                                              serial_crc=self.serial_crc)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_pin = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.tx_pin = tx_pin = io.Buffer("o", uart.tx)
        m.d.comb += [dev.rx.eq(rx_pin.i), tx_pin.o.eq(dev.tx)]
        for i, value in enumerate([dev.busy, dev.link_errors.any()]):
            try:
                led = platform.request("led", i, dir="-")
            except ResourceError:
                break
            m.submodules[f"led{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(value)
        return m

    def _pll(self, m: Module, platform, fin: float) -> None:
        m.submodules.clk_pin = clk_pin = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        clk_in = clk_pin.i
        m.domains.sync = cd_sync = ClockDomain("sync")
        clk, locked = cd_sync.clk, Signal()
        if self.family == "ice40":
            s = ice40_pll(fin, self.freq_hz)
            m.submodules.pll = Instance(
                "SB_PLL40_CORE", p_FEEDBACK_PATH="SIMPLE", p_DIVR=s.params["DIVR"], p_DIVF=s.params["DIVF"],
                p_DIVQ=s.params["DIVQ"], p_FILTER_RANGE=s.params["FILTER_RANGE"],
                i_REFERENCECLK=clk_in, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        else:
            s = ecp5_pll(fin, self.freq_hz)
            p = s.params
            m.submodules.pll = Instance(
                "EHXPLLL", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_in, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
                i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_CLKOP=clk, o_LOCK=locked,
                a_FREQUENCY_PIN_CLKI=f"{fin / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{s.fout / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2")
        if abs(s.fout - self.freq_hz) > 1e3:
            raise ValueError(f"the PLL makes {s.fout / 1e6:.4g} MHz from {fin / 1e6:g} MHz, not the "
                             f"{self.freq_hz / 1e6:g} MHz asked for; choose a reachable --freq")
        # No clock constraint here: nextpnr derives the PLL output's from the oscillator's and the
        # dividers (its log's "FAIL/PASS at" figure is the PLL's frequency).
        m.submodules.reset = ResetSynchronizer(~locked, domain="sync")
