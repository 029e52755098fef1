"""The adaptive-latent StyleGAN2 swap's training recipe (arXiv 2303.04186; networks in
:mod:`models.latent_swap`): the dual-space encoder and the adaptive latent-swap module learn in front of a
frozen StyleGAN2 generator, end to end through the blend with the encoder's own mask.

One step (the paper's losses are known to us only by name; everything marked *ours* is our choice):

1. Target and source crops (FFHQ-aligned: ``prepare-faces --template ffhq``) are encoded in one batch; the
   module mixes the source's code into the target's; the generator draws ``G(w)``; the output is
   ``Y = m G(w) + (1 − m) X_t`` with ``m`` the encoder's mask of the target.
2. ``L = λ_id L_id + λ_l2 L_l2 + λ_lpips L_lpips + λ_3dmm L_3dmm + λ_mask L_mask``:
   ``L_id = 1 − cos(ArcFace(Y), ArcFace(X_s))``, ArcFace seeing its own 112 px window of the FFHQ crops
   (:func:`arcface_window`); ``L_l2 = ½ mean (Y − X_t)²`` and ``L_lpips`` = LPIPS(Y,
   X_t) over the reconstruction pairs (source = target: the swap must give the target back); ``L_3dmm``
   attribute preservation, Deep3DFaceRecon's expression, angle, lighting and translation of Y against
   X_t's (WSC-swap's term, :func:`pipeline.training.recipes.wsc.recon_loss`; *ours*: the paper names
   attribute preservation, not its measure); ``L_mask`` the binary cross-entropy of the mask head's logits
   against the target's face region, the outline of dlib's 68 landmarks (*ours*: no parsing labels needed;
   :func:`stages.swap_wsc.crop_regions`). Weights ``train.latent_lambda_*``: id 5 (AEI-Net's
   and our WSC's), l2 1 and lpips 0.8 (pSp's and e4e's reconstruction weights), 3dmm 1, mask 1 (*ours*).
3. No adversarial term (*ours*): the generator is frozen, so every drawn face is on StyleGAN2's manifold,
   and the blend is the only thing a discriminator could judge.
4. The encoder's ``latent_avg`` is the generator's mean W (:func:`stages.attribute_edit.mapping_mean`),
   set before training, so the encoder learns offsets from the mean face as e4e does.

``train.tiny``: the generator is a random 64 px StyleGAN2 of the ``stylegan2:`` section's layout (fixed seed;
a tiny run sets the section small), the identity encoder, 3DMM regressor and LPIPS trunk small or random
frozen networks (fixed seeds): for CPU smoke runs and tests. Logged beside the losses: ``mask_iou``, the
mask head's IoU (at 0.5) against the step's landmark regions. Checkpoint keys ``model``, ``optimizer``.
Export: ``latent_swap.pth`` (``latent_swap``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ConfigError
from models.latent_swap import LatentSwapNet, to_side
from models.losses import identity_loss, reconstruction_loss
from models.stylegan2 import Generator
from models.weights import load_configured
from pipeline.training.data import PairBatch
from pipeline.training.recipe import Recipe, core, require_files
from pipeline.training.recipes.faceshifter import TINY_IDENTITY_LAYERS, adam_options, identity_encoder
from pipeline.training.recipes.wsc import recon_loss, tiny_recon, window_grid
from stages.swap_faceshifter import ARCFACE_SIZE
from stages.swap_wsc import crop_regions

TINY_GENERATOR_SEED = 20230300  # fixed, so every tiny run (and the tests' backend) sees the same generator
TINY_LPIPS_SEED = 20180000
MEAN_SAMPLES = 10_000  # z samples of the generator's mean W, the encoder's latent_avg
LAMBDAS = ("id", "l2", "lpips", "3dmm", "mask")


def tiny_generator(layout: dict) -> Generator:
    """The frozen random generator of ``train.tiny`` runs (fixed seed; noise strengths 0.1, not the
    untrained zero, so the fixed noise maps show)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_GENERATOR_SEED)
        net = Generator(**layout)
        for name, p in net.named_parameters():
            if name.endswith("noise.weight"):
                nn.init.constant_(p, 0.1)
    return net


def arcface_window(images: torch.Tensor) -> torch.Tensor:
    """ArcFace's 112 px input cut out of FFHQ crops ``(N, 3, S, S)`` in [-1, 1], bilinearly (differentiable):
    the window in which a frontal face's 5 points fall on ArcFace's template (the FFHQ crop holds hair, neck
    and background around the face, which ArcFace was not trained to see)."""
    from stages.geometry import ARCFACE_TEMPLATE, ffhq_alignment

    m = ffhq_alignment(ARCFACE_TEMPLATE.astype(np.float64) * ARCFACE_SIZE, images.shape[-1])
    grid = window_grid(m, ARCFACE_SIZE, images.shape[-1], len(images), str(images.device))
    return F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )


def mask_iou(logits: torch.Tensor, region: torch.Tensor) -> float:
    """IoU of the mask ``sigmoid(logits) > 0.5`` with ``region > 0.5`` (both ``(B, 1, S, S)``), over the
    batch."""
    pred, true = logits > 0.0, region > 0.5
    union = (pred | true).sum()
    return float((pred & true).sum() / union) if union > 0 else 1.0


class LatentRecipe(Recipe):
    """The adaptive-latent swap: one update of the encoder and the gates a step (module docstring)."""

    name = "latent"
    summary = "adaptive-latent StyleGAN2 swap (dual-space encoder + gates; frozen generator)"
    exports: ClassVar[dict[str, str]] = {"model": "latent_swap"}
    progress_terms = ("g", "id", "l2", "mask_iou")

    @classmethod
    def architecture(cls, cfg: dict) -> dict[str, Any]:
        t, c = cfg["train"], cfg["latent"]
        layout = {k: (v if k != "stages" else [list(s) for s in v]) for k, v in c["layout"].items()}
        generator = dict(cfg["stylegan2"])
        n_latent = 2 * int(math.log2(int(generator["size"]))) - 2
        width = int(layout["stages"][3][0])
        if int(layout["n_styles"]) != n_latent or width != int(generator["style_dim"]):
            raise ConfigError(
                f"latent.layout must fit the generator: n_styles = {n_latent} (2 log2 stylegan2.size - 2) "
                f"and the last stage's width = stylegan2.style_dim ({generator['style_dim']})"
            )
        identity = (
            {"tiny": True, "layers": list(TINY_IDENTITY_LAYERS)}
            if t["tiny"]
            else {"tiny": False, "name": c["arcface"]}
        )
        return {
            "kind": "latent",
            "size": int(layout["input_size"]),
            "latent": layout,
            "stylegan2": generator,
            "identity": identity,
            "tiny": bool(t["tiny"]),
        }

    @classmethod
    def check_files(cls, arch: dict[str, Any], cfg: dict) -> None:
        """Outside tiny runs: the generator, the identity encoder, the 3DMM regressor (its loss on) and the
        LPIPS trunk (its loss on) in ``weights.dir``."""

        if arch["tiny"]:
            return
        t = cfg["train"]
        needed = [
            ("stylegan2_ffhq", "the frozen StyleGAN2 generator"),
            (arch["identity"]["name"], "the frozen identity encoder"),
        ]
        if float(t["latent_lambda_3dmm"]) > 0:
            needed.append(("face_recon", "the attribute loss (or train.latent_lambda_3dmm=0)"))
        if float(t["latent_lambda_lpips"]) > 0:
            needed.append(("vgg16_imagenet", "the LPIPS loss (or train.latent_lambda_lpips=0)"))
        require_files("latent", needed, cfg)

    def __init__(
        self, arch: dict[str, Any], cfg: dict, device: str, prepare: Callable[[nn.Module], nn.Module]
    ) -> None:
        from models.lpips import LPIPS, load_lpips
        from models.weights import pinned_sha256
        from stages.attribute_edit import mapping_mean
        from stages.landmarks import LandmarkStage

        t = cfg["train"]
        self.weights = {k: float(t[f"latent_lambda_{k}"]) for k in LAMBDAS}
        tiny = arch["tiny"]
        if tiny:
            generator: nn.Module = tiny_generator(arch["stylegan2"])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(TINY_LPIPS_SEED)
                lpips: nn.Module = LPIPS()
            self.recon = tiny_recon(device) if self.weights["3dmm"] > 0 else None
        else:
            generator = load_configured("stylegan2_ffhq", cfg, device)
            lpips = load_lpips(cfg["weights"]["dir"], device, pinned_sha256("vgg16_imagenet", cfg))
            self.recon = (
                load_configured("face_recon", cfg, device).eval().requires_grad_(False)
                if self.weights["3dmm"] > 0
                else None
            )
        self.generator = generator.eval().requires_grad_(False).to(device)
        self.lpips = lpips.eval().requires_grad_(False).to(device)
        self.identity = identity_encoder(arch, cfg, device)
        self.landmarker = LandmarkStage(cfg)
        net = LatentSwapNet(**arch["latent"])
        with torch.no_grad():
            mean = mapping_mean(self.generator, MEAN_SAMPLES).cpu()
            net.encoder.latent_avg.copy_(mean.expand_as(net.encoder.latent_avg))
        self.model = prepare(net.train())
        self.opt = torch.optim.Adam(self.model.parameters(), **adam_options(cfg))
        self.networks = {"model": self.model}
        self.optimizers = {"optimizer": self.opt}

    def _identity(self, images: torch.Tensor) -> torch.Tensor:
        return self.identity(arcface_window(images))

    def _draw(self, w: torch.Tensor, side: int) -> torch.Tensor:
        return to_side(self.generator(w), side)

    def step(self, batch: PairBatch) -> dict[str, float]:
        """One update of the encoder and the gates; returns the loss terms and ``mask_iou``."""
        xt, xs, same = batch.target, batch.source, batch.same
        with torch.no_grad():
            z_s = self._identity(xs)
            region = crop_regions(xt, "ffhq", self.landmarker)
        w, mask_logits, _, _ = self.model(xt, xs)
        drawn = self._draw(w, xt.shape[-1])
        y = LatentSwapNet.blend(drawn, xt, mask_logits)
        zero = torch.zeros((), device=y.device)
        rec = same.bool()
        terms = {
            "id": identity_loss(self._identity(y), z_s),
            "l2": reconstruction_loss(y, xt, same),
            "lpips": self.lpips(y[rec], xt[rec], normalize=False).mean() if rec.any() else zero,
            "3dmm": recon_loss(self.recon, y, xt, "ffhq") if self.recon is not None else zero,
            "mask": F.binary_cross_entropy_with_logits(mask_logits, region),
        }
        total = sum(self.weights[k] * terms[k] for k in LAMBDAS)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        out = {"g": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        out["mask_iou"] = mask_iou(mask_logits.detach(), region)
        with (
            torch.no_grad()
        ):  # the identity term over the swap pairs alone (the reconstruction pairs' falls fast)
            swaps = ~rec
            out["id_swap"] = (
                float(identity_loss(self._identity(y[swaps]), z_s[swaps])) if swaps.any() else float("nan")
            )
        return out

    def sample_rows(self, batch: PairBatch) -> list[torch.Tensor]:
        """target | source | the target's mask (grey) | the drawn face | the blended swap."""
        net = core(self.model)
        net.eval()
        try:
            w, mask_logits, _, _ = net(batch.target, batch.source)
            drawn = self._draw(w, batch.target.shape[-1])
            blended = LatentSwapNet.blend(drawn, batch.target, mask_logits)
        finally:
            net.train()
        grey = (torch.sigmoid(mask_logits) * 2.0 - 1.0).expand_as(batch.target)
        return [batch.target, batch.source, grey, drawn, blended]
