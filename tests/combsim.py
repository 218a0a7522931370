"""Shared testbench for combinational gateware: drive each input vector, read the outputs it settles to."""
from amaranth.sim import Simulator


def responses(dut, vectors, drive, read):
    """drive(ctx, vector) sets the inputs; read(ctx) returns what to compare; one result per vector."""
    out = []

    async def bench(ctx):
        for v in vectors:
            drive(ctx, v)
            out.append(read(ctx))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return out
