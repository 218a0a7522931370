"""rfsnn host software: problems, float references, training loops and the CLI."""
