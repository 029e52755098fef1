"""The training-recipe interface: what one method (networks, losses, step) gives the generic loop.

A recipe owns everything specific to a method: the layout it builds from the config, its trainable networks
and optimisers, frozen helper networks, one optimisation step (forward, backward and the order of its
optimiser updates, GAN alternation included), its sample grid rows, and which trained networks become which
registry weight files. :mod:`pipeline.training.loop` owns the rest: device, seeds, data, checkpoints,
resume, logs, sample PNGs, Ray Train, interruption and the final export.

Tensors a recipe sees (:class:`pipeline.training.data.PairBatch`): ``target`` and ``source``
``(B, 3, S, S) float32`` RGB (R, G, B order) in [-1, 1] on the training device, ``same`` ``(B,) bool``
(True: the source crop is the target crop). ``S`` is ``architecture(cfg)["size"]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.training.data import PairBatch

# Checkpoint keys the loop writes itself; a recipe's network and optimiser names must not use them.
RESERVED_KEYS = frozenset({"step", "kind", "arch", "rng"})


def core(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def require_files(method: str, needed: list[tuple[str, str]], cfg: dict) -> None:
    """Each ``(registry name, what it is for)`` of ``needed`` present in ``weights.dir`` (its pinned hash
    checked); else ModelFileError ``train METHOD needs WHAT: <the file's own one-line error>``."""
    from models.errors import ModelFileError
    from models.weights import locate_configured

    for name, why in needed:
        try:
            locate_configured(name, cfg)
        except ModelFileError as exc:
            raise ModelFileError(f"train {method} needs {why}: {exc}") from None


class Recipe(ABC):
    """One training method. Built once per worker, after the loop seeded torch with ``train.seed``.

    Class attributes:
        name: the ``train NAME`` choice (also the checkpoint's ``kind`` and the TensorBoard tag prefix).
        summary: a few words for ``train --help``.
        exports: trained network name (a key of :attr:`networks`) → :data:`models.weights.REGISTRY` name;
            the network's plain ``state_dict`` is written as ``out/<that entry's filename>``.
        total_loss: the key of :meth:`step`'s dict that is the weighted total (summary line, progress bar).
        progress_terms: keys of :meth:`step`'s dict shown on the progress bar.

    Instance attributes (set by ``__init__``):
        networks: name → trainable network, each wrapped by ``prepare`` (DDP under Ray Train). Names are the
            checkpoint keys of their ``state_dict`` (``model`` for the exported generator, by convention).
        optimizers: name → optimiser over those networks; names are the checkpoint keys of their state.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    exports: ClassVar[dict[str, str]]
    total_loss: ClassVar[str] = "g"
    progress_terms: ClassVar[tuple[str, ...]] = ("g",)

    networks: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    @classmethod
    @abstractmethod
    def architecture(cls, cfg: dict) -> dict[str, Any]:
        """The network layout this recipe builds from ``cfg``: a plain dict of JSON-like values with at least
        ``"size"`` (the crop side S trained on). Stored in every checkpoint and compared on resume.
        ConfigError for impossible settings."""

    @classmethod
    def check_files(cls, arch: dict[str, Any], cfg: dict) -> None:
        """Fail fast, before any network is built or Ray started, on missing weight files the recipe loads
        (ConfigError / ModelFileError naming the setting). Default: nothing to check."""
        return None

    @abstractmethod
    def __init__(
        self,
        arch: dict[str, Any],
        cfg: dict,
        device: str,
        prepare: Callable[[nn.Module], nn.Module],
    ) -> None:
        """Build the frozen helpers on ``device``, the trainable :attr:`networks` (in train mode, passed
        through ``prepare``, which moves them to ``device``) and their :attr:`optimizers`, from ``arch`` and
        ``cfg["train"]``."""

    def bind_crops(self, files: list[Path]) -> None:
        """Called once after ``__init__`` with the training crops' files (:attr:`FaceCrops.files`, the order
        ``PairBatch.target_index`` counts in), for a recipe that reads per-crop data. Default: nothing."""
        return None

    @abstractmethod
    def step(self, batch: PairBatch) -> dict[str, float]:
        """One training step on ``batch``: every forward, backward and optimiser update of the method, in its
        order (e.g. generator, then discriminator). Returns the step's loss terms as Python floats,
        including :attr:`total_loss`."""

    @abstractmethod
    def sample_rows(self, batch: PairBatch) -> list[torch.Tensor]:
        """The sample grid of ``batch`` (the networks as exported, i.e. in eval mode; leave them in train
        mode): rows of ``(K, 3, S, S)`` RGB in [-1, 1], the first two ``batch.target`` and
        ``batch.source``. Called under ``torch.no_grad()``."""
