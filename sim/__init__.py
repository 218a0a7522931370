"""rfsnn device contract: the configuration object and the bit-exact NumPy golden model."""
