"""RSGAN's training recipe (Natsume et al. 2018; networks in :mod:`models.rsgan`) on the project's loop.

One step (choices marked *ours*: the paper's layouts and weights are not known to us):

1. The targets' face regions: the outline of dlib's 68 landmarks predicted on each crop
   (:func:`stages.swap_wsc.crop_regions`; prepare-faces' GHOST crops). The face region is ``x · m``, the
   hair region (hair, the rest of the head, the background) ``x · (1 − m)``.
2. Both region VAEs encode their region; latents are drawn with the reparameterisation; each decoder
   rebuilds its own region; the generator rebuilds the whole crop from both latents (and the attribute
   vector, none here: *ours*, attribute labels are not wired yet). A second image swaps the faces within
   the batch (``z_face`` rolled by one) for the adversarial term, so that swapped latents draw realistic
   faces too (*ours*).
3. Generator update: ``λ_kl (KL_face + KL_hair) + λ_region (L1_face + L1_hair) + λ_rec L1_whole +
   λ_adv L_adv``; ``L_adv`` the non-saturating loss on the rebuilt and the swapped images (their mean).
   Weights ``train.rsgan_lambda_*``: kl 0.001 (the KL is summed over the 256 latent dimensions, the L1
   averaged over pixels), region 10, rec 10, adv 1 (*ours*).
4. Discriminator update (spectral norm; non-saturating loss): real targets against both detached images.

``train.tiny`` only shrinks nothing here: the layout is the ``rsgan.layout`` config section's
(``configs/train_tiny.yaml``'s tests set a 64 px one). Checkpoint keys ``model``, ``discriminator``,
``optimizer``, ``disc_optimizer``. Export: ``rsgan.pth`` (``rsgan``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ConfigError
from models.rsgan import RSGAN, RSGANDiscriminator, kl_divergence
from pipeline.training.data import PairBatch
from pipeline.training.recipe import Recipe, core
from pipeline.training.recipes.faceshifter import adam_options
from stages.swap_wsc import crop_regions

LAMBDAS = ("kl", "region", "rec", "adv")


class RSGANRecipe(Recipe):
    """RSGAN: generator (both VAEs and the generator) then discriminator updates (module docstring)."""

    name = "rsgan"
    summary = "RSGAN (face and hair VAEs, a generator from both latents)"
    exports: ClassVar[dict[str, str]] = {"model": "rsgan"}
    progress_terms = ("g", "rec_face", "rec_hair", "kl")

    @classmethod
    def architecture(cls, cfg: dict) -> dict[str, Any]:
        layout = dict(cfg["rsgan"]["layout"])
        try:
            with torch.device("meta"):
                RSGAN(**layout)
        except ValueError as exc:
            raise ConfigError(f"rsgan.layout: {exc}") from None
        if int(layout["n_attr"]):
            raise ConfigError("rsgan.layout.n_attr: training with attribute labels is not built yet; set 0")
        return {"kind": "rsgan", "size": int(layout["size"]), "rsgan": layout}

    def __init__(
        self, arch: dict[str, Any], cfg: dict, device: str, prepare: Callable[[nn.Module], nn.Module]
    ) -> None:
        from stages.landmarks import LandmarkStage

        t, layout = cfg["train"], arch["rsgan"]
        self.weights = {k: float(t[f"rsgan_lambda_{k}"]) for k in LAMBDAS}
        self.landmarker = LandmarkStage(cfg)
        self.model = prepare(RSGAN(**layout).train())
        self.disc = prepare(
            RSGANDiscriminator(int(layout["size"]), int(layout["base"]), int(layout["n_attr"])).train()
        )
        self.opt = torch.optim.Adam(self.model.parameters(), **adam_options(cfg))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), **adam_options(cfg))
        self.networks = {"model": self.model, "discriminator": self.disc}
        self.optimizers = {"optimizer": self.opt, "disc_optimizer": self.opt_d}

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        return crop_regions(x, "ghost", self.landmarker)

    def step(self, batch: PairBatch) -> dict[str, float]:
        x = batch.target
        with torch.no_grad():
            face = self.regions(x)
        out = self.model(x, face)
        disc = core(self.disc)
        disc.requires_grad_(False)
        real_whole, _ = self.disc(out["whole"])
        real_swap, _ = self.disc(out["swapped"])
        terms = {
            "kl": kl_divergence(out["mu_f"], out["lv_f"]) + kl_divergence(out["mu_h"], out["lv_h"]),
            "rec_face": (out["rec_face"] - x * face).abs().mean(),
            "rec_hair": (out["rec_hair"] - x * (1.0 - face)).abs().mean(),
            "rec": (out["whole"] - x).abs().mean(),
            "adv": 0.5 * (F.softplus(-real_whole).mean() + F.softplus(-real_swap).mean()),
        }
        total = (
            self.weights["kl"] * terms["kl"]
            + self.weights["region"] * (terms["rec_face"] + terms["rec_hair"])
            + self.weights["rec"] * terms["rec"]
            + self.weights["adv"] * terms["adv"]
        )
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()

        disc.requires_grad_(True)
        fakes = torch.cat((out["whole"].detach(), out["swapped"].detach()))
        logits_real, _ = self.disc(x)
        logits_fake, _ = self.disc(fakes)
        loss_d = F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
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
            rebuilt = net.generate(mu_f_t, mu_h_t)
            swapped = net.generate(mu_f_s, mu_h_t)
        finally:
            net.train()
        grey = (face_t * 2.0 - 1.0).expand_as(batch.target)
        return [batch.target, batch.source, grey, rebuilt, swapped]
