"""Strict loading of plain state_dict files (``torch.load(weights_only=True)``) with one-line errors.

A file must hold a plain ``{key: Tensor}`` dict: wrapper dicts (``{"state_dict": ...}``, ``{"model": ...}``)
and ``module.`` prefixes are refused, not unwrapped, so a file only loads if it is exactly what the network
expects. The one exception is a wrapper the weight registry names for a file (``state_key``): the public
Deep3DFaceRecon checkpoint keeps its state_dict under ``"net_recon"``.
Values are copied into the model's own tensors, so they take the model's dtype and device
(a float16 file loads into a float32 model).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from models.errors import ModelFileError, WeightFileError


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise a one-line WeightFileError (a ValueError) naming ``source`` and the first key (in the model's
    order) that is missing or has another shape, else the first unexpected key, with the counts of each
    problem."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [k for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if not (missing or unexpected or misshaped):
        return
    bad = set(missing) | set(misshaped)
    first = next(k for k in own if k in bad) if bad else unexpected[0]
    if first in state_dict and first in own:
        file_shape, own_shape = _shape(state_dict[first]), _shape(own[first])
        what = f"key {first!r} has shape {file_shape} in the file, {own_shape} in the model"
    elif first in own:
        what = f"key {first!r} is missing"
    else:
        what = f"key {first!r} is not in the model"
    counts = (
        f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped key(s) in all"
    )
    if unexpected and all(k.startswith("module.") for k in unexpected):
        counts += "; the file's keys carry a 'module.' prefix: save model.module.state_dict() instead"
    raise WeightFileError(f"{source} does not fit {type(model).__name__}: {what} ({counts})")


def add_missing_batch_counters(
    state_dict: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` with a zero ``num_batches_tracked`` for every BatchNorm of ``model`` whose
    running statistics are in the file but whose counter is not (files saved by PyTorch < 0.4.1).

    The counter only matters for training with ``momentum=None``; eval-mode outputs do not depend on it.
    """
    out = dict(state_dict)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            prefix = f"{name}." if name else ""
            key = f"{prefix}num_batches_tracked"
            if key not in out and f"{prefix}running_mean" in out:
                out[key] = torch.tensor(0, dtype=torch.long)
    return out


def load_state_dict_file(
    model: nn.Module,
    path: str | Path,
    state_key: str | None = None,
    legacy_batchnorm: bool = False,
    drop_keys: tuple[str, ...] = (),
) -> nn.Module:
    """Read the plain state_dict at ``path`` with ``weights_only=True`` and load it into ``model`` strictly.

    state_key: the file is a dict whose entry ``state_key`` holds the state_dict (a format the registry
    names for that file); the entry must exist. legacy_batchnorm: the file predates BatchNorm's
    ``num_batches_tracked`` counter (PyTorch < 0.4.1); zero counters are added before the strict check.
    drop_keys: entries the public loader deletes before its strict load (e.g. a training loss's weights
    saved beside the network); they must be in the file.

    Returns ``model`` (training mode and ``requires_grad`` unchanged). Raises ModelFileError if the file
    does not exist, WeightFileError (a ValueError; one line, naming the file and the first offending key)
    otherwise.
    """
    obj = checked_state_dict(model, path, state_key, legacy_batchnorm, drop_keys=drop_keys)
    model.load_state_dict(obj, strict=True)
    return model


def checked_state_dict(
    model: nn.Module,
    path: str | Path,
    state_key: str | None = None,
    legacy_batchnorm: bool = False,
    mmap: bool = False,
    drop_keys: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """The state_dict in ``path``, checked to fit ``model`` key for key and shape for shape (see
    :func:`load_state_dict_file`; same errors). mmap: map a zip-format file instead of reading its tensors
    (cheap; with a ``meta``-device model this checks a file's layout without loading it)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weight file for {type(model).__name__} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as exc:  # unpickling, zip or storage errors: all mean "not a usable weights file"
        first_line = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:120]
        raise WeightFileError(
            f"{path}: not a weights-only torch file: damaged, cut short or not saved by torch.save "
            f"({type(exc).__name__}: {first_line})"
        ) from None
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path}: expected a plain state_dict, got {type(obj).__name__}")
    if state_key is not None:
        if not isinstance(obj.get(state_key), dict):
            keys = ", ".join(repr(k) for k in list(obj)[:5])
            raise WeightFileError(
                f"{path}: expected a dict with a {state_key!r} state_dict entry; its keys start {keys}"
            )
        obj = obj[state_key]
    not_tensors = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not_tensors:
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        kind = type(obj[not_tensors[0]]).__name__
        raise WeightFileError(
            f"{path}: expected a plain state_dict of tensors, but entry {not_tensors[0]!r} is {kind} "
            f"(a wrapper dict? its keys start {keys}; save the inner state_dict)"
        )
    absent = [k for k in drop_keys if k not in obj]
    if absent:
        raise WeightFileError(
            f"{path}: expected an entry {absent[0]!r} beside the network's; not the file named"
        )
    obj = {k: v for k, v in obj.items() if k not in drop_keys}
    if legacy_batchnorm:
        obj = add_missing_batch_counters(obj, model)
    check_state_dict(model, obj, str(path))
    return obj
