"""FaceShifter's training recipes: AEI-Net (stage 1, adversarial) and HEAR-Net (stage 2, on a frozen AEI-Net).

Both see the source's identity through a frozen identity encoder (ArcFace, or a fixed random tiny IResNet
with ``train.tiny``). AEI-Net trains against a multiscale discriminator (one generator update, then one
discriminator update per step); HEAR-Net refines the swaps of a frozen AEI-Net from ``train.aei_checkpoint``.
Losses: :mod:`models.losses` (the ``rec`` term counts only the batch's ``same`` reconstruction pairs).

Checkpoint keys: AEI ``model``, ``optimizer``, ``discriminator``, ``disc_optimizer``; HEAR ``model``,
``optimizer``. Exports: ``G_unet_2blocks.pth`` (``aei_net``) | ``hear_net.pth`` (``hear_net``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from models.aei_net import TINY_AEI_CONFIG, AEINet
from models.arcface import IResNet
from models.checkpoints import load_state_dict_file
from models.discriminator import MultiscaleDiscriminator
from models.errors import ConfigError, ModelFileError
from models.hear_net import TINY_HEAR_CONFIG, HEARNet
from models.losses import (
    AEILossWeights,
    HEARLossWeights,
    aei_generator_loss,
    discriminator_loss,
    hear_loss,
)
from models.weights import REGISTRY, load_configured
from pipeline.training.data import PairBatch
from pipeline.training.recipe import Recipe, core
from stages.swap_faceshifter import arcface_input

KINDS = ("aei", "hear")
EXPORT_NAMES = {"aei": REGISTRY["aei_net"].filename, "hear": REGISTRY["hear_net"].filename}
TINY_IDENTITY_LAYERS = (1, 1, 1, 1)
TINY_IDENTITY_SEED = 20190000  # fixed, so a tiny HEAR run sees the identity space its tiny AEI-Net learnt


def architecture(kind: str, cfg: dict) -> dict[str, Any]:
    """The network layout ``train`` builds for ``kind`` from ``cfg["train"]``: a plain dict (stored in every
    checkpoint and compared on resume). ConfigError for impossible settings."""
    if kind not in KINDS:
        raise ConfigError(f"train kind must be one of {', '.join(KINDS)}, got {kind!r}")
    t = cfg["train"]
    size = int(t["size"])
    if t["tiny"]:
        if size != TINY_AEI_CONFIG["size"]:
            raise ConfigError(
                f"train.tiny=true trains {TINY_AEI_CONFIG['size']} px networks: set train.size=64"
            )
        aei = dict(TINY_AEI_CONFIG)
        hear = dict(TINY_HEAR_CONFIG)
        identity = {"tiny": True, "layers": list(TINY_IDENTITY_LAYERS)}
    else:
        aei = {"size": size, "base": int(t["aei_base"]), "num_blocks": int(t["aei_num_blocks"])}
        hear = {"base": int(t["hear_base"])}
        identity = {"tiny": False, "name": cfg["faceshifter"]["arcface"]}
    if size < 32 or size & (size - 1):
        raise ConfigError(f"train.size={size} must be a power of two >= 32")
    arch: dict[str, Any] = {"kind": kind, "size": size, "aei": aei, "identity": identity}
    if kind == "aei":
        arch["disc"] = {
            "ndf": int(t["disc_ndf"]),
            "n_layers": int(t["disc_layers"]),
            "num_d": int(t["disc_scales"]),
        }
    else:
        arch["hear"] = hear
    return arch


def identity_encoder(arch: dict[str, Any], cfg: dict, device: str) -> nn.Module:
    """The frozen identity network (eval mode, no gradients) on ``device``.

    Tiny: ``IResNet((1, 1, 1, 1))`` with a fixed random init (the same in every tiny run). Otherwise the
    registry's ArcFace ``arch["identity"]["name"]`` (the recipe's setting, e.g. ``faceshifter.arcface``)
    from ``weights.dir``; ModelFileError if missing. Shared by the recipes that use ArcFace.
    """
    if arch["identity"]["tiny"]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_IDENTITY_SEED)
            net: nn.Module = IResNet(TINY_IDENTITY_LAYERS)
    else:
        try:
            net = load_configured(arch["identity"]["name"], cfg, "cpu")
        except ModelFileError as exc:
            raise ModelFileError(
                f"training needs the frozen identity encoder: {exc} (or use train.tiny=true for a smoke run)"
            ) from None
    return net.eval().requires_grad_(False).to(device)


def frozen_aei(arch: dict[str, Any], cfg: dict, device: str) -> AEINet:
    """HEAR-Net training's frozen AEI-Net from ``train.aei_checkpoint`` (strict load), eval, no gradients."""
    path = str(cfg["train"]["aei_checkpoint"] or "")
    if not path:
        raise ConfigError(
            "train hear needs the AEI-Net it refines: set train.aei_checkpoint=PATH to the "
            f"{EXPORT_NAMES['aei']} that `train aei` exported (same train.tiny/size/widths)"
        )
    net = AEINet(**arch["aei"])
    try:
        load_state_dict_file(net, path)
    except ValueError as exc:
        raise ConfigError(
            f"train.aei_checkpoint: {exc}; give the {EXPORT_NAMES['aei']} of a `train aei` run with the same "
            "train.tiny, size and widths"
        ) from None
    return net.eval().requires_grad_(False).to(device)


def adam_options(cfg: dict) -> dict[str, Any]:
    """Adam's learning rate and betas from ``train`` (every recipe's optimisers)."""
    t = cfg["train"]
    return {"lr": float(t["lr"]), "betas": (float(t["beta1"]), float(t["beta2"]))}


class _FaceShifter(Recipe):
    """What both stages share: the layout of their ``kind`` and the frozen identity encoder."""

    kind: str
    progress_terms = ("g", "rec")

    @classmethod
    def architecture(cls, cfg: dict) -> dict[str, Any]:
        return architecture(cls.kind, cfg)

    @classmethod
    def check_files(cls, arch: dict[str, Any], cfg: dict) -> None:
        """The full-size identity encoder's weights must be in ``weights.dir``."""
        if not arch["identity"]["tiny"]:
            from models.weights import locate_configured

            try:
                locate_configured(arch["identity"]["name"], cfg)
            except ModelFileError as exc:
                raise ModelFileError(
                    f"training needs the frozen identity encoder: {exc} "
                    "(or use train.tiny=true for a smoke run)"
                ) from None

    def _identity(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` RGB in [-1, 1] → the identity encoder's ``(N, D)`` embeddings."""
        return self.identity(arcface_input(images))


class AEIRecipe(_FaceShifter):
    """AEI-Net against a multiscale discriminator: one generator update, then one discriminator update."""

    name = kind = "aei"
    summary = "stage 1 generator"
    exports: ClassVar[dict[str, str]] = {"model": "aei_net"}

    def __init__(
        self, arch: dict[str, Any], cfg: dict, device: str, prepare: Callable[[nn.Module], nn.Module]
    ) -> None:
        t = cfg["train"]
        self.identity = identity_encoder(arch, cfg, device)
        self.model = prepare(AEINet(**arch["aei"]).train())
        self.disc = prepare(MultiscaleDiscriminator(**arch["disc"]).train())
        self.opt_d = torch.optim.Adam(self.disc.parameters(), **adam_options(cfg))
        self.weights = AEILossWeights(
            att=float(t["lambda_att"]), id=float(t["lambda_id"]), rec=float(t["lambda_rec"])
        )
        self.opt = torch.optim.Adam(self.model.parameters(), **adam_options(cfg))
        self.networks = {"model": self.model, "discriminator": self.disc}
        self.optimizers = {"optimizer": self.opt, "disc_optimizer": self.opt_d}

    def step(self, batch: PairBatch) -> dict[str, float]:
        """One generator + one discriminator update; returns the loss terms."""
        xt, xs, same = batch.target, batch.source, batch.same
        with torch.no_grad():
            z_s = self._identity(xs)
        y, attr_t = self.model(xt, z_s)
        attr_y = core(self.model).get_attributes(y)
        disc = core(self.disc)
        disc.requires_grad_(False)  # the generator step needs no discriminator gradients
        fake = disc(y)
        loss_g, terms = aei_generator_loss(
            fake, self._identity(y), z_s, attr_y, attr_t, y, xt, same, self.weights
        )
        self.opt.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt.step()
        disc.requires_grad_(True)
        # One pass over real sources and detached fakes (the norms are per-sample, so this equals two passes).
        logits = self.disc(torch.cat((xs, y.detach())))
        n = len(xs)
        loss_d, d_terms = discriminator_loss([m[:n] for m in logits], [m[n:] for m in logits])
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return {**terms, **d_terms}

    def sample_rows(self, batch: PairBatch) -> list[torch.Tensor]:
        """target | source | swapped."""
        net = core(self.model)
        net.eval()
        try:
            swapped, _ = net(batch.target, self._identity(batch.source))
        finally:
            net.train()
        return [batch.target, batch.source, swapped]


class HEARRecipe(_FaceShifter):
    """HEAR-Net on a frozen AEI-Net: refines Ŷ(s,t) given the heuristic error X_t - Ŷ(t,t)."""

    name = kind = "hear"
    summary = "stage 2 refinement"
    exports: ClassVar[dict[str, str]] = {"model": "hear_net"}

    @classmethod
    def check_files(cls, arch: dict[str, Any], cfg: dict) -> None:
        """``train.aei_checkpoint`` must name a file; then the identity encoder's weights."""
        path = cfg["train"]["aei_checkpoint"]
        if not path:
            raise ConfigError(
                f"train hear needs train.aei_checkpoint=PATH (the {EXPORT_NAMES['aei']} `train aei` exported)"
            )
        if not Path(path).is_file():
            raise ModelFileError(
                f"{path}: train.aei_checkpoint not found (the {EXPORT_NAMES['aei']} of `train aei`)"
            )
        super().check_files(arch, cfg)

    def __init__(
        self, arch: dict[str, Any], cfg: dict, device: str, prepare: Callable[[nn.Module], nn.Module]
    ) -> None:
        t = cfg["train"]
        self.identity = identity_encoder(arch, cfg, device)
        self.aei = frozen_aei(arch, cfg, device)
        self.model = prepare(HEARNet(**arch["hear"]).train())
        self.weights = HEARLossWeights(chg=float(t["hear_lambda_chg"]), rec=float(t["hear_lambda_rec"]))
        self.opt = torch.optim.Adam(self.model.parameters(), **adam_options(cfg))
        self.networks = {"model": self.model}
        self.optimizers = {"optimizer": self.opt}

    def hear_inputs(
        self, xt: torch.Tensor, xs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """HEAR-Net's inputs from the frozen networks: (source identity ``(N, D)``, AEI swap Ŷ(s,t),
        heuristic error X_t - Ŷ(t,t)), images ``(N, 3, S, S)``."""
        with torch.no_grad():
            z_s, z_t = self._identity(xs), self._identity(xt)
            swapped, _ = self.aei(xt, z_s)
            recon, _ = self.aei(xt, z_t)
        return z_s, swapped, HEARNet.heuristic_error(xt, recon)

    def step(self, batch: PairBatch) -> dict[str, float]:
        """One HEAR-Net update; returns the loss terms."""
        z_s, swapped, error = self.hear_inputs(batch.target, batch.source)
        refined = self.model(swapped, error)
        loss, terms = hear_loss(
            self._identity(refined), z_s, refined, swapped, batch.target, batch.same, self.weights
        )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return terms

    def sample_rows(self, batch: PairBatch) -> list[torch.Tensor]:
        """target | source | AEI-Net swap | refined."""
        net = core(self.model)
        net.eval()
        try:
            _, swapped, error = self.hear_inputs(batch.target, batch.source)
            refined = net(swapped, error)
        finally:
            net.train()
        return [batch.target, batch.source, swapped, refined]
