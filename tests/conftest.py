"""Suite-wide collection order, a check that pytest-xdist keeps each group on one worker, and the fixtures
that run Amaranth simulations and require Verilog simulators."""
import os

import pytest


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort keeps each group's own order). Under pytest-xdist (make test)
    the long ones then run side by side from the start, instead of the last of them running alone
    at the end: longest-first, the classic schedule for parallel machines."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """`--dist loadgroup` groups tests by a suffix xdist writes into each marked test's node id. pytest
    9.2 ignores that write (pytest-xdist issue 1386), and the tests of one group then spread over the
    workers, each building the group's bitstream or Verilator model again: minutes of CPU, no error.
    So a worker refuses to run when a marked test's id lacks its group."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        groups = sorted(str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group"))
        if groups and not item.nodeid.endswith("@" + "_".join(groups)):
            raise pytest.UsageError(f"pytest-xdist did not group {item.nodeid} (xdist_group {groups}); "
                                    "pytest-xdist's loadgroup needs pytest < 9.2 (see pyproject.toml)")


@pytest.fixture(scope="session")
def simulate():
    """simulate(dut, *testbenches, clock=1e-8): run the async testbenches (each takes ctx) on dut; clock=None: none."""
    from amaranth.sim import Simulator

    def run(dut, *testbenches, clock=1e-8):
        sim = Simulator(dut)
        if clock is not None:
            sim.add_clock(clock)
        for bench in testbenches:
            sim.add_testbench(bench)
        sim.run()

    return run


@pytest.fixture(scope="session")
def responses(simulate):
    """responses(dut, vectors, drive, read): drive(ctx, v) each vector in turn, read(ctx) what it settles to."""

    def run(dut, vectors, drive, read):
        out = []

        async def bench(ctx):
            for v in vectors:
                drive(ctx, v)
                out.append(read(ctx))

        simulate(dut, bench, clock=None)
        return out

    return run


@pytest.fixture(scope="session")
def require_simulator():
    """require_simulator(name): skip if that Verilog simulator is missing (fail if RFSNN_REQUIRE_SIMULATORS)."""

    def require(simulator: str) -> None:
        from rfsnn.sim import rtlsim

        try:
            rtlsim.find_simulator(simulator)
        except rtlsim.SimulatorMissing as e:
            if os.environ.get("RFSNN_REQUIRE_SIMULATORS"):
                raise
            pytest.skip(str(e))

    return require
