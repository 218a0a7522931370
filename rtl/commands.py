"""The learner's command and response streams as Amaranth layouts, built from the contract's field
widths (rfsnn.sim.contract.commands holds the operations, registers and statuses themselves)."""
from amaranth.lib import data

from rfsnn.sim.contract.commands import DATA_BITS, INDEX_BITS, OP_BITS, STATUS_BITS

COMMAND = data.StructLayout({"op": OP_BITS, "index": INDEX_BITS, "data": DATA_BITS})
RESPONSE = data.StructLayout({"status": STATUS_BITS, "data": DATA_BITS})
