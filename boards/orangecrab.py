"""OrangeCrab r0.2: no FTDI, so the host's serial port is a USB CDC-ACM device in the gateware
(luna-usb's USBSerialDevice on its gateware full-speed PHY, straight on the FPGA's USB pins).

Clocks from the 48 MHz oscillator through one PLL (VCO 480 MHz): usb_io at 48 MHz (the PHY's bit
recovery), usb at 12 MHz, and sync for the device. Bytes cross between usb and sync through an
asynchronous FIFO each way; the tx side marks the last byte waiting as the end of a USB packet, so
a reply goes out as soon as it is complete rather than when a packet fills.
"""
from __future__ import annotations

from amaranth import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.fifo import AsyncFIFO

from rfsnn.rtl.top import DeviceCore
from rfsnn.sim.contract.config import DeviceConfig

USB_VID, USB_PID = 0x1209, 0x0001  # pid.codes' test PID: change it before shipping boards
VCO_HZ = 480e6


class OrangeCrabTop(Elaboratable):
    def __init__(self, cfg: DeviceConfig, neuron_lanes: int, sample_lanes: int, freq_hz: float):
        divider = round(VCO_HZ / freq_hz)
        if abs(VCO_HZ / divider - freq_hz) > 1e3 or not 1 <= divider <= 128:
            raise ValueError(f"the OrangeCrab's PLL (VCO 480 MHz) makes 480/N MHz; {freq_hz / 1e6:g} MHz is not "
                             f"one (e.g. 15, 16, 20, 24)")
        self.cfg, self.freq_hz, self.divider = cfg, freq_hz, divider
        self.neuron_lanes, self.sample_lanes = neuron_lanes, sample_lanes

    def elaborate(self, platform):
        from luna.gateware.interface.gateware_phy import GatewarePHY
        from luna.gateware.usb.devices.acm import USBSerialDevice

        m = Module()
        self._clocks(m, platform)
        m.submodules.phy = phy = GatewarePHY(io=platform.request("usb", 0))
        m.submodules.acm = acm = USBSerialDevice(bus=phy, idVendor=USB_VID, idProduct=USB_PID,
                                                 manufacturer_string="rfsnn", product_string="rfsnn learner")
        m.submodules.core = core = DeviceCore(self.cfg, self.neuron_lanes, self.sample_lanes)
        m.submodules.rx_cdc = rx_cdc = AsyncFIFO(width=8, depth=16, w_domain="usb", r_domain="sync")
        m.submodules.tx_cdc = tx_cdc = AsyncFIFO(width=8, depth=16, w_domain="sync", r_domain="usb")
        first = Signal(init=1)  # the next byte sent starts a USB packet
        m.d.comb += [
            acm.connect.eq(1),
            rx_cdc.w_data.eq(acm.rx.payload), rx_cdc.w_en.eq(acm.rx.valid), acm.rx.ready.eq(rx_cdc.w_rdy),
            core.rx_bytes.payload.eq(rx_cdc.r_data), core.rx_bytes.valid.eq(rx_cdc.r_rdy),
            rx_cdc.r_en.eq(core.rx_bytes.ready),
            tx_cdc.w_data.eq(core.tx_bytes.payload), tx_cdc.w_en.eq(core.tx_bytes.valid),
            core.tx_bytes.ready.eq(tx_cdc.w_rdy),
            acm.tx.payload.eq(tx_cdc.r_data), acm.tx.valid.eq(tx_cdc.r_rdy), tx_cdc.r_en.eq(acm.tx.ready),
            acm.tx.first.eq(first), acm.tx.last.eq(tx_cdc.r_level == 1),
        ]
        with m.If(acm.tx.valid & acm.tx.ready):
            m.d.usb += first.eq(acm.tx.last)
        rgb = platform.request("rgb_led", 0, dir="-")
        m.submodules.led = led = io.Buffer("o", rgb.g)
        m.d.comb += led.o.eq(core.busy)
        return m

    def _clocks(self, m: Module, platform) -> None:
        m.submodules.clk_pin = clk_pin = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        clk48 = clk_pin.i
        m.domains.usb_io = cd_io = ClockDomain("usb_io")
        m.domains.usb = cd_usb = ClockDomain("usb")
        m.domains.sync = cd_sync = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_CLKI_DIV=1, p_CLKFB_DIV=1, p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=10, p_CLKOP_CPHASE=9, p_CLKOP_FPHASE=0,  # 48 MHz
            p_CLKOS_ENABLE="ENABLED", p_CLKOS_DIV=40, p_CLKOS_CPHASE=39, p_CLKOS_FPHASE=0,  # 12 MHz
            p_CLKOS2_ENABLE="ENABLED", p_CLKOS2_DIV=self.divider, p_CLKOS2_CPHASE=self.divider - 1,
            p_CLKOS2_FPHASE=0,
            i_CLKI=clk48, i_CLKFB=cd_io.clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
            i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0, i_ENCLKOS=0, i_ENCLKOS2=0,
            o_CLKOP=cd_io.clk, o_CLKOS=cd_usb.clk, o_CLKOS2=cd_sync.clk, o_LOCK=locked,
            a_FREQUENCY_PIN_CLKI="48", a_FREQUENCY_PIN_CLKOP="48", a_FREQUENCY_PIN_CLKOS="12",
            a_FREQUENCY_PIN_CLKOS2=f"{VCO_HZ / self.divider / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2")
        for domain in ("usb_io", "usb", "sync"):
            m.submodules[f"reset_{domain}"] = ResetSynchronizer(~locked, domain=domain)
