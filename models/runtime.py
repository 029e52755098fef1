"""Where and on what a network or stage runs: the device a config names, and one shape check.

The shape check covers arrays and tensors (a typed error with the actual and the expected shape, as kornia's
``KORNIA_CHECK_SHAPE``).

At the models floor, so networks, stages and the research tools all import the same two helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.errors import ConfigError


def resolve_device(name: str) -> str:
    """``cpu`` | ``cuda`` | ``auto`` (cuda when present, else cpu) → a torch device string. ``cuda`` on a
    machine without one is a ConfigError (never a silent CPU run that a user thinks is on the GPU)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.device must be cpu, cuda or auto, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda but torch sees no CUDA device: use runtime.device=cpu")
    return name


class ShapeError(ValueError):
    """An array or tensor of the wrong shape or dtype; ``actual`` and ``expected`` say how."""

    def __init__(self, what: str, actual: tuple, expected: str, dtype: str | None = None) -> None:
        self.actual, self.expected = actual, expected
        got = f"{actual}" + (f" {dtype}" if dtype else "")
        super().__init__(f"{what} must be {expected}, got {got}")


def check_shape(x: Any, dims: Sequence[int | str], what: str, dtype: Any = None, note: str = "") -> None:
    """Raise :class:`ShapeError` unless ``x`` (numpy array or torch tensor) has ``len(dims)`` dimensions,
    each equal to the int given there (a name such as ``"N"`` or ``"H"`` takes any size), and, when
    ``dtype`` is given, that dtype (``np.uint8``, ``torch.float32``; for tensors ``"float"`` means any
    floating dtype). ``note`` follows the expected shape in the message (``"uint8 RGB"``)."""
    shape = tuple(int(s) for s in x.shape)
    ok = len(shape) == len(dims) and all(isinstance(d, str) or s == d for s, d in zip(shape, dims))
    kind = x.dtype
    if dtype == "float":
        ok = ok and bool(getattr(kind, "is_floating_point", False))
    elif dtype is not None:
        ok = ok and kind == (np.dtype(dtype) if isinstance(x, np.ndarray) else dtype)
    if not ok:
        expected = "(" + ", ".join(str(d) for d in dims) + ")" + (f" {note}" if note else "")
        raise ShapeError(what, shape, expected, str(kind) if dtype is not None else None)
