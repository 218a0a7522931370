"""Skip a test whose Verilog simulator is missing, unless CI demands it (RFSNN_REQUIRE_SIMULATORS)."""
import os

import pytest


def require(simulator: str) -> None:
    from rfsnn.sim import rtlsim

    try:
        rtlsim.find_simulator(simulator)
    except rtlsim.SimulatorMissing as e:
        if os.environ.get("RFSNN_REQUIRE_SIMULATORS"):
            raise
        pytest.skip(str(e))
