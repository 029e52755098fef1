"""The pipeline's stages: plain classes that take and return FrameBatches, and their shared helpers."""
