"""Network weights for tests: randomised state dicts and random checkpoints in the registry's layout."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


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
