"""One time step of a constant-current LIF layer (the first hidden layer) over its membrane RAM.

The layer's n neurons are split into chunks of `neuron_lanes`; a RAM word holds the membranes (and, in
a second RAM, the input currents) of one chunk for `sample_lanes` samples, so one word feeds all
P = neuron_lanes x sample_lanes LIFLanes at once. A tick streams the chunks through: read U and I,
update, write U back, emit the chunk's spikes; one chunk per clock after a one-clock read latency.
Padding neurons of the last chunk have zero current, so they never spike.

Word layout: lane p = sample * neuron_lanes + neuron.
"""
from __future__ import annotations

import math

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rfsnn.sim.config import DeviceConfig

from .lif import LIFLanes


class LayerTick(wiring.Component):
    def __init__(self, cfg: DeviceConfig, n_neurons: int, neuron_lanes: int, sample_lanes: int):
        self.cfg, self.n, self.nl, self.sl = cfg, n_neurons, neuron_lanes, sample_lanes
        self.chunks = math.ceil(n_neurons / neuron_lanes)
        self.word = data.ArrayLayout(signed(cfg.u_bits), neuron_lanes * sample_lanes)
        spikes = data.StructLayout({"chunk": range(self.chunks), "bits": neuron_lanes * sample_lanes})
        super().__init__({
            # Loading currents (once per sample group) and clearing membranes (start of a sample).
            "cur_addr": In(range(self.chunks)),
            "cur_data": In(self.word),
            "cur_we": In(1),
            "clear": In(1),  # zero every membrane; takes `chunks` clocks
            "tick": In(1),  # run one time step over all chunks
            "busy": Out(1),
            "spikes": Out(stream.Signature(spikes, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        P = self.nl * self.sl
        m.submodules.u_mem = u_mem = Memory(shape=self.word, depth=self.chunks, init=[])
        m.submodules.i_mem = i_mem = Memory(shape=self.word, depth=self.chunks, init=[])
        u_wr, i_wr = u_mem.write_port(), i_mem.write_port()
        u_rd, i_rd = u_mem.read_port(), i_mem.read_port()
        m.submodules.lif = lif = LIFLanes(self.cfg, P)

        m.d.comb += [i_wr.addr.eq(self.cur_addr), i_wr.data.eq(self.cur_data), i_wr.en.eq(self.cur_we)]
        for p in range(P):
            m.d.comb += [lif.u[p].eq(u_rd.data[p]), lif.cur[p].eq(i_rd.data[p])]

        addr = Signal(range(self.chunks + 1))
        pending = Signal()  # a read issued last clock: its data is on the read ports now
        pending_addr = Signal(range(self.chunks))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.clear):
                    m.d.sync += addr.eq(0)
                    m.next = "CLEAR"
                with m.Elif(self.tick):
                    m.d.sync += [addr.eq(0), pending.eq(0)]
                    m.next = "RUN"
            with m.State("CLEAR"):
                m.d.comb += [self.busy.eq(1), u_wr.addr.eq(addr), u_wr.data.eq(0), u_wr.en.eq(1)]
                m.d.sync += addr.eq(addr + 1)
                with m.If(addr == self.chunks - 1):
                    m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                # Issue the read of chunk `addr` while the previous chunk's data is updated and written.
                m.d.comb += [u_rd.addr.eq(addr), i_rd.addr.eq(addr)]
                m.d.sync += [pending.eq(addr < self.chunks), pending_addr.eq(addr)]
                with m.If(addr < self.chunks):
                    m.d.sync += addr.eq(addr + 1)
                with m.If(pending):
                    m.d.comb += [
                        u_wr.addr.eq(pending_addr), u_wr.data.eq(lif.u_next), u_wr.en.eq(1),
                        self.spikes.valid.eq(1),
                        self.spikes.payload.chunk.eq(pending_addr),
                        self.spikes.payload.bits.eq(lif.spike),
                    ]
                with m.If(~pending & (addr == self.chunks)):
                    m.next = "IDLE"
        return m
