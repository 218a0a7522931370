"""rfsnn gateware (Amaranth). The LIF core array, LFSR and perturbation-update unit land with issue 3;
until then the device is defined by rfsnn.sim (config + golden model) and docs/fixed-point.md."""
