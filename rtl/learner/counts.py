"""The first hidden layer's spike counts, looked up: P currents in, P counts out two clocks later.

The first hidden layer is direct-coded: its current is constant over the T time steps, so a neuron's
spike count is a function of that current alone (docs/fixed-point.md section 2). With one hidden layer
the count is all the readout needs, so the learner looks it up instead of running the T-step loop
(T x C1 clocks per group of samples, 80% of a step's cycles before this block): a current <= 0 counts
0, one >= theta counts T, and the theta - 1 currents in between index a ROM built at elaboration from
the contract's table (`sim/contract/neuron.first_layer_counts`, the one the golden model uses). Those
counts are at most T - 1, so the ROM word is log2 T bits: 4096 x 4 for the default Q(24, 12) threshold
1.0 and T = 16, one ECP5 block RAM per two lanes (its two read ports).

Clock 0: `valid`, `cur`, `tag` in (registered). Clock 1: the ROM address (the current, or 0 outside
(0, theta)), and whether the current reached theta. Clock 2: `out_valid`, `count`, `out_tag`.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.contract.neuron import first_layer_counts


def first_layer_looked_up(cfg: DeviceConfig) -> bool:
    """One hidden layer: its spike counts are looked up, and it has no membranes or time loop. (Deeper
    networks need the first layer's spikes at each time step, for the event-driven layer after it.)"""
    return cfg.n_layers == 2


def count_shape(cfg: DeviceConfig) -> unsigned:
    """A spike count, 0 .. T."""
    return unsigned(cfg.t_shift + 1)


class SpikeCountTable(wiring.Component):
    def __init__(self, cfg: DeviceConfig, lanes: int, tag_shape):
        self.cfg, self.lanes = cfg, lanes
        super().__init__({
            "valid": In(1),
            "cur": In(data.ArrayLayout(signed(cfg.u_bits), lanes)),
            "tag": In(tag_shape),  # travels with the currents (the learner's chunk number)
            "out_valid": Out(1),
            "count": Out(data.ArrayLayout(count_shape(cfg), lanes)),
            "out_tag": Out(tag_shape),
            "busy": Out(1),  # currents in flight
        })

    def elaborate(self, platform):
        m = Module()
        cfg, P = self.cfg, self.lanes
        theta, T = cfg.threshold_q, cfg.t_steps
        cur = Signal.like(self.cur)
        ge = Signal(P)  # clock 2: the current reached theta (fires at every step)
        valid, tag = Signal(2), [Signal.like(self.tag, name=f"tag{k}") for k in range(2)]
        m.d.sync += [cur.eq(self.cur), valid.eq(Cat(self.valid, valid[0])), tag[0].eq(self.tag), tag[1].eq(tag[0])]
        m.d.sync += [ge[q].eq(cur[q] >= theta) for q in range(P)]
        table = [int(c) for c in first_layer_counts(cfg)[:theta]]  # currents 0 .. theta-1: counts <= T - 1
        rom_bits = (T - 1).bit_length()
        if rom_bits:
            # One ROM per two lanes, as a block RAM has two read ports (one memory with P read ports
            # would leave the copies to yosys, whose memory mapping fails on 64 of them).
            roms = []
            for r in range(-(-P // 2)):
                m.submodules[f"rom{r}"] = rom = Memory(shape=unsigned(rom_bits), depth=theta, init=table,
                                                       attrs={"ram_style": "block"})
                roms.append(rom)
            for q in range(P):
                port = roms[q // 2].read_port()
                inside = (cur[q] > 0) & (cur[q] < theta)
                m.d.comb += [port.addr.eq(Mux(inside, cur[q][:len(port.addr)], 0)),
                             self.count[q].eq(Mux(ge[q], T, port.data))]
        else:  # T = 1: a current below theta never fires
            m.d.comb += [self.count[q].eq(Mux(ge[q], T, 0)) for q in range(P)]
        m.d.comb += [self.out_valid.eq(valid[1]), self.out_tag.eq(tag[1]), self.busy.eq(valid.any())]
        return m

