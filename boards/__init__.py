"""rfsnn board targets (amaranth-boards platforms), their top levels and the YoWASP build: docs/boards.md."""
