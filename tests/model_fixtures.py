"""Network weights for tests: randomised state dicts, random checkpoints in the registry's layout, and the
interop key tables, weight recipe and reference vectors in ``../shared/interop`` (never copied here)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

INTEROP = Path(__file__).resolve().parents[1].parent / "shared" / "interop"


def _interop_file(name: str) -> Path:
    path = INTEROP / name
    if not path.is_file():
        pytest.fail(f"interop file not found: {path} (the shared folder sits next to the repository)")
    return path


def interop_table(name: str) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Rows ``key<TAB>shape<TAB>dtype`` of an interop key table as (key, shape, torch dtype), file order."""
    rows = interop_recipe().read_table(str(_interop_file(name)))
    return [(key, shape, getattr(torch, dtype)) for key, shape, dtype in rows]


@functools.cache
def interop_recipe() -> ModuleType:
    """``../shared/interop/recipe.py``, the reference's deterministic test weights (VECTORS.md)."""
    spec = importlib.util.spec_from_file_location("interop_recipe", _interop_file("recipe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interop_vectors(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of ``vectors/<name>.npz`` and its parsed ``meta``."""
    with np.load(_interop_file(f"vectors/{name}.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def recipe_weights(table: str, meta: dict) -> dict[str, torch.Tensor]:
    """The state_dict the reference vectors were made with: the recipe for ``table`` with the vector
    file's seed, gain and scheme."""
    recipe = interop_recipe()
    rows = recipe.read_table(str(_interop_file(table)))
    return recipe.recipe_state_dict(rows, meta["seed"], meta["gain"], meta.get("scheme", "default"))


def randomised_state(model: nn.Module, seed: int, counter: int = 1234) -> dict[str, torch.Tensor]:
    """The model's state_dict with every value changed (BN running variances kept positive, int64
    counters such as ``num_batches_tracked`` set to ``counter``)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if value.dtype == torch.int64:
            out[key] = torch.full_like(value, counter)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith("running_mean"):
            out[key] = 0.1 * torch.randn(value.shape, generator=gen)
        else:
            out[key] = value + 0.02 * torch.randn(value.shape, generator=gen)
    return out


def write_random_checkpoints(folder: Path, names: tuple[str, ...], seed: int = 0) -> None:
    """Randomly initialised checkpoints of the weight registry's networks ``names``, saved in ``folder``
    under their registry file names and in the layout the registry loads."""
    from models.weights import REGISTRY, build_network

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        entry = REGISTRY[name]
        state = build_network(entry.network).state_dict()
        torch.save({entry.state_key: state} if entry.state_key else state, folder / entry.filename)
