"""swapstream: video face swap as a streaming pipeline of plain stages (CLI, config, executors)."""

__version__ = "0.1.0"
