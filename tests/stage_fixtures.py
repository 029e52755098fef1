"""Small deterministic stages for executor tests (importable by Ray workers)."""

from __future__ import annotations

import numpy as np

from stages.types import FrameBatch


class Brighten:
    """Stateless: adds the frame index to every pixel (mod 256)."""

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        batch = batch.writable()
        batch.frames += (batch.indices % 256).astype(np.uint8)[:, None, None, None]
        return batch

    def flush(self) -> list[FrameBatch]:
        return []


class DelayOne:
    """Holds each batch back until the next one arrives (look-ahead); mixes in the previous frame's mean."""

    def __init__(self) -> None:
        self.held: FrameBatch | None = None
        self.prev_mean = 0

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        out, self.held = self.held, batch
        if out is None:
            return FrameBatch(batch.video_id, batch.indices[:0], batch.pts[:0], batch.frames[:0], [])
        return self._mix(out)

    def _mix(self, batch: FrameBatch) -> FrameBatch:
        batch = batch.writable()
        for i in range(len(batch)):
            mean = int(batch.frames[i].mean())
            batch.frames[i] ^= np.uint8(self.prev_mean % 256)
            self.prev_mean = mean
        return batch

    def flush(self) -> list[FrameBatch]:
        out, self.held = self.held, None
        return [self._mix(out)] if out is not None else []


class CrashOnce:
    """Passes batches through; on its ``at_call``-th batch it kills its own process with SIGKILL (as the
    kernel's OOM killer would), once per ``marker`` file: the file is created just before."""

    def __init__(self, marker: str, at_call: int = 2) -> None:
        self.marker, self.at_call, self.calls = marker, at_call, 0

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        import os
        import signal

        self.calls += 1
        if self.calls == self.at_call and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    def flush(self) -> list[FrameBatch]:
        return []


class InterruptAt:
    """Passes batches through until one holds frame ``frame``, then raises KeyboardInterrupt (as Ctrl-C
    would in the middle of a run)."""

    def __init__(self, frame: int) -> None:
        self.frame = frame

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        if self.frame in batch.indices:
            raise KeyboardInterrupt
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
