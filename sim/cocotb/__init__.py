"""cocotb testbenches: each compares a gateware block (as exported Verilog) with the golden model."""
