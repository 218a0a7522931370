"""rfsnn board targets (amaranth-boards platforms). Land with issue 5."""
