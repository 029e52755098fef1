"""RSGAN's training recipe (Natsume et al. 2018; networks in :mod:`models.rsgan`) on the project's loop.

One step (choices marked *ours*: the paper's layouts and weights are not known to us):

1. The targets' face regions: the outline of dlib's 68 landmarks predicted on each crop
   (:func:`stages.swap_wsc.crop_regions`; prepare-faces' GHOST crops), or with ``rsgan.regions=parsing``
   the face parser's skin, brows, eyes, nose and lips. The face region is ``x · m``, the
   hair region (hair, the rest of the head, the background) ``x · (1 − m)``.
2. Both region VAEs encode their region; latents are drawn with the reparameterisation; each decoder
   rebuilds its own region; the generator rebuilds the whole crop from both latents and the crop's
   attribute vector (with ``train.rsgan_attributes``: CelebA's 40 labels of the crop's source image, from
   a ``list_attr_celeba.txt`` file, matched by the image's file name through the crops' ``index.jsonl``;
   none without). A second image swaps the faces within the batch (``z_face`` rolled by one, the target's
   attributes kept: *ours*) for the adversarial term, so that swapped latents draw realistic faces too.
3. Generator update: ``λ_kl (KL_face + KL_hair) + λ_region (L1_face + L1_hair) + λ_rec L1_whole +
   λ_adv L_adv + λ_cls L_cls``; ``L_adv`` the non-saturating loss on the rebuilt and the swapped images
   (their mean); ``L_cls`` the binary cross-entropy of the discriminator's attribute head on the rebuilt
   crop against its labels (with attributes). Weights ``train.rsgan_lambda_*``: kl 0.001 (the KL is summed
   over the latent, the L1 averaged over pixels), region 10, rec 10, adv 1, cls 1 (*ours*).
4. Discriminator update (spectral norm; non-saturating loss): real targets against both detached images,
   plus its attribute head's cross-entropy on the real crops' labels (AC-GAN style). The discriminator is
   exported too: its attribute head estimates a photo's attributes for ``edit --backend rsgan``.

``train.tiny`` changes nothing here (no frozen helper networks): the layout is the ``rsgan.layout`` config
section's; the tests set a 64 px one. Checkpoint keys ``model``, ``discriminator``,
``optimizer``, ``disc_optimizer``. Export: ``rsgan.pth`` (``rsgan``), ``rsgan_discriminator.pth``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ConfigError, InputError
from models.rsgan import CELEBA_ATTRIBUTES, RSGAN, RSGANDiscriminator, kl_divergence
from pipeline.training.data import PairBatch
from pipeline.training.recipe import Recipe, core, require_files
from pipeline.training.recipes.faceshifter import adam_options
from stages.swap_wsc import crop_regions

LAMBDAS = ("kl", "region", "rec", "adv", "cls")


def read_celeba_attributes(path: str | Path) -> dict[str, np.ndarray]:
    """A ``list_attr_celeba.txt`` file: image file name → its 40 labels ``(40,) float32`` in {0, 1} (the
    file's 1 / -1), in :data:`models.rsgan.CELEBA_ATTRIBUTES` order. InputError naming the file and line
    when it is not in that format."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such attribute file (train.rsgan_attributes)")
    lines = p.read_text().splitlines()
    if len(lines) < 2 or tuple(lines[1].split()) != CELEBA_ATTRIBUTES:
        raise InputError(
            f"{p}: not CelebA's list_attr_celeba.txt format (line 2 must name its 40 attributes)"
        )
    table = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 41 or any(v not in ("1", "-1") for v in fields[1:]):
            raise InputError(f"{p}: line {number}: expected a file name and 40 values of 1 or -1")
        table[fields[0]] = (np.array(fields[1:], dtype=np.float32) + 1.0) / 2.0
    return table


def crop_labels(files: list[Path], table: dict[str, np.ndarray], where: str) -> torch.Tensor:
    """Each crop's labels ``(N, 40)``: those of the image it was cut from (the crops' ``index.jsonl``
    ``source``, by file name), or of the crop's own file name. InputError naming how many crops have
    none, with an example."""
    import json

    sources: dict[str, str] = {}
    for index in {f.parent / "index.jsonl" for f in files}:
        if index.is_file():
            for line in index.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    sources[row["file"]] = Path(row["source"]).name
    rows, missing = [], []
    for f in files:
        name = sources.get(f.name, f.name)
        if name not in table:
            missing.append(f.name)
            continue
        rows.append(table[name])
    if missing:
        raise InputError(
            f"{where}: no labels for {len(missing)} of {len(files)} crops (e.g. {missing[0]}); "
            "label every source image, or train without train.rsgan_attributes"
        )
    return torch.from_numpy(np.stack(rows))


class RSGANRecipe(Recipe):
    """RSGAN: generator (both VAEs and the generator) then discriminator updates (module docstring)."""

    name = "rsgan"
    summary = "RSGAN (face and hair VAEs, a generator from both latents)"
    exports: ClassVar[dict[str, str]] = {"model": "rsgan", "discriminator": "rsgan_discriminator"}
    progress_terms = ("g", "rec_face", "rec_hair", "kl")

    @classmethod
    def architecture(cls, cfg: dict) -> dict[str, Any]:
        layout = dict(cfg["rsgan"]["layout"])
        try:
            with torch.device("meta"):
                RSGAN(**layout)
        except ValueError as exc:
            raise ConfigError(f"rsgan.layout: {exc}") from None
        labels = str(cfg["train"]["rsgan_attributes"])
        wanted = len(CELEBA_ATTRIBUTES) if labels else 0
        if int(layout["n_attr"]) != wanted:
            raise ConfigError(
                f"rsgan.layout.n_attr must be {wanted} "
                + (
                    "with train.rsgan_attributes (CelebA's 40)"
                    if labels
                    else "without train.rsgan_attributes"
                )
            )
        regions = cfg["rsgan"]["regions"]
        return {
            "kind": "rsgan",
            "size": int(layout["size"]),
            "rsgan": layout,
            "attributes": labels,
            "regions": regions,
        }

    @classmethod
    def check_files(cls, arch: dict[str, Any], cfg: dict) -> None:
        """The attribute file, when given, readable and in CelebA's format; the face parser with
        ``rsgan.regions=parsing``."""
        if arch["attributes"]:
            read_celeba_attributes(arch["attributes"])
        if arch["regions"] == "parsing":
            require_files("rsgan", [("face_parser_bisenet", "rsgan.regions=parsing (or landmarks)")], cfg)

    def __init__(
        self, arch: dict[str, Any], cfg: dict, device: str, prepare: Callable[[nn.Module], nn.Module]
    ) -> None:
        from stages.landmarks import LandmarkStage

        t, layout = cfg["train"], arch["rsgan"]
        self.weights = {k: float(t[f"rsgan_lambda_{k}"]) for k in LAMBDAS}
        from stages.swap_rsgan import rsgan_parser

        self.landmarker = LandmarkStage(cfg)
        self.parser = rsgan_parser(cfg, device) if arch["regions"] == "parsing" else None
        self.model = prepare(RSGAN(**layout).train())
        self.disc = prepare(
            RSGANDiscriminator(int(layout["size"]), int(layout["base"]), int(layout["n_attr"])).train()
        )
        self.opt = torch.optim.Adam(self.model.parameters(), **adam_options(cfg))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), **adam_options(cfg))
        self.networks = {"model": self.model, "discriminator": self.disc}
        self.attribute_file = arch["attributes"]
        self.labels: torch.Tensor | None = None
        self.device = device
        self.optimizers = {"optimizer": self.opt, "disc_optimizer": self.opt_d}

    def bind_crops(self, files: list[Path]) -> None:
        """With attributes: each crop's labels, looked up once (:func:`crop_labels`)."""
        if self.attribute_file:
            table = read_celeba_attributes(self.attribute_file)
            self.labels = crop_labels(files, table, self.attribute_file)

    def _attributes(self, index: torch.Tensor | None) -> torch.Tensor | None:
        if self.labels is None:
            return None
        return self.labels[index].to(self.device)

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        return crop_regions(x, "ghost", self.landmarker, self.parser)

    def step(self, batch: PairBatch) -> dict[str, float]:
        x = batch.target
        with torch.no_grad():
            face = self.regions(x)
        c = self._attributes(batch.target_index)
        out = self.model(x, face, c)
        disc = core(self.disc)
        disc.requires_grad_(False)
        real_whole, attr_whole = self.disc(out["whole"])
        real_swap, _ = self.disc(out["swapped"])
        terms = {
            "kl": kl_divergence(out["mu_f"], out["lv_f"]) + kl_divergence(out["mu_h"], out["lv_h"]),
            "rec_face": (out["rec_face"] - x * face).abs().mean(),
            "rec_hair": (out["rec_hair"] - x * (1.0 - face)).abs().mean(),
            "rec": (out["whole"] - x).abs().mean(),
            "adv": 0.5 * (F.softplus(-real_whole).mean() + F.softplus(-real_swap).mean()),
            "cls": F.binary_cross_entropy_with_logits(attr_whole, c)
            if c is not None
            else real_whole.new_zeros(()),
        }
        total = (
            self.weights["kl"] * terms["kl"]
            + self.weights["region"] * (terms["rec_face"] + terms["rec_hair"])
            + self.weights["rec"] * terms["rec"]
            + self.weights["adv"] * terms["adv"]
            + self.weights["cls"] * terms["cls"]
        )
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()

        disc.requires_grad_(True)
        fakes = torch.cat((out["whole"].detach(), out["swapped"].detach()))
        logits_real, attr_real = self.disc(x)
        logits_fake, _ = self.disc(fakes)
        loss_d = F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
        if c is not None:
            loss_d = loss_d + self.weights["cls"] * F.binary_cross_entropy_with_logits(attr_real, c)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return {
            "g": float(total.detach()),
            **{k: float(v.detach()) for k, v in terms.items()},
            "d": float(loss_d.detach()),
        }

    def sample_rows(self, batch: PairBatch) -> list[torch.Tensor]:
        """target | source | face region (grey) | rebuilt | source's face on the target's hair."""
        net = core(self.model)
        net.eval()
        try:
            face_t, face_s = self.regions(batch.target), self.regions(batch.source)
            mu_f_t, _, mu_h_t, _ = net.encode(batch.target, face_t)
            mu_f_s, _, _, _ = net.encode(batch.source, face_s)
            c = self._attributes(batch.target_index)
            rebuilt = net.generate(mu_f_t, mu_h_t, c)
            swapped = net.generate(mu_f_s, mu_h_t, c)
        finally:
            net.train()
        grey = (face_t * 2.0 - 1.0).expand_as(batch.target)
        return [batch.target, batch.source, grey, rebuilt, swapped]
