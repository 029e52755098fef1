"""models/runtime.py: the device a config names, and the one shape check (typed error, both shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import ConfigError
from models.runtime import ShapeError, check_shape, resolve_device


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="cpu, cuda or auto"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_a_wrong_shape_names_both_shapes():
    with pytest.raises(ShapeError) as err:
        check_shape(np.zeros((4, 5, 4), np.uint8), ("H", "W", 3), "image", np.uint8, "uint8 RGB")
    assert str(err.value) == "image must be (H, W, 3) uint8 RGB, got (4, 5, 4) uint8"
    assert err.value.actual == (4, 5, 4) and isinstance(err.value, ValueError)
    with pytest.raises(ShapeError, match=r"got \(2, 3, 8\)"):
        check_shape(torch.zeros(2, 3, 8), ("N", 3, "H", "W"), "crops")


def test_dtypes_are_checked_when_asked():
    check_shape(np.zeros((4, 5, 3), np.uint8), ("H", "W", 3), "image", np.uint8)
    check_shape(torch.zeros(1, 3, 8, 8, dtype=torch.float64), ("N", 3, "H", "W"), "crops", "float")
    with pytest.raises(ShapeError, match="float32"):
        check_shape(np.zeros((4, 5, 3), np.float32), ("H", "W", 3), "image", np.uint8)
    with pytest.raises(ShapeError, match="torch.int64"):
        check_shape(torch.zeros(1, 3, 8, 8, dtype=torch.int64), ("N", 3, "H", "W"), "crops", "float")
    with pytest.raises(ShapeError):
        check_shape(torch.zeros(1, 3, 8, 8, dtype=torch.float64), ("N", 3, "H", "W"), "x", torch.float32)
