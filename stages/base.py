"""The stage protocol shared by all executors."""

from __future__ import annotations

from typing import Protocol

from stages.types import FrameBatch


class Stage(Protocol):
    """A plain callable over batches. Stages know nothing about executors or Ray."""

    def __call__(self, batch: FrameBatch) -> FrameBatch: ...

    def flush(self) -> list[FrameBatch]:
        """Emit batches held back for look-ahead (none for stateless stages)."""
        ...
