"""WSC-swap's training recipe (Ren et al., ICCV 2023): the generator of :mod:`models.wsc_net` with its
identity-removal adversary and a 3DMM non-identity loss, on the project's loop.

One step (choices the paper leaves open, or that we could not read, are marked *ours*):

1. The targets' face regions (:func:`stages.swap_wsc.region_masks`): dlib's 68 landmarks predicted on each
   crop from the GHOST frontal template's 5 points (prepare-faces crops are GHOST crops, so the face sits
   there; *ours*), their outline's mask; or the face parser's classes with ``wsc.regions=parsing``.
2. Generator update, ``L = L_adv + λ_id L_id + λ_rec L_rec + λ_out L_out + λ_3dmm L_3dmm + λ_rm L_rm``:
   ``L_adv`` the multi-scale hinge loss (:class:`models.discriminator.MultiscaleDiscriminator`, as AEI-Net);
   ``L_id = 1 - cos(ArcFace(Y), ArcFace(X_s))``; ``L_rec = ½ mean (Y - X_t)²`` over reconstruction pairs
   (:func:`models.losses.reconstruction_loss`); ``L_out = ½ mean ((1 - region) (Y - X_t))²`` over every
   pair: outside the face the swap is the target (what the pixel encoder is for; *ours*: on other pairs
   FaceShifter-style training has no pixel target at all, and without it a tiny run's reconstruction did
   not halve in 60 steps); ``L_3dmm`` the mean absolute difference of the expression
   (64), angle (3), lighting (27) and translation (3) coefficients of Deep3DFaceRecon between Y and X_t,
   each group's mean weighted 1 (*ours*); both crops go through the network's own 224 window, fixed for
   the GHOST frontal template's 5 points (:func:`models.face_recon.input_window`; a turned face's crop
   places its points elsewhere, but target and swap share the window, so their coefficients stay
   comparable; *ours*); ``L_rm`` the identity removal: the probe's identification of the batch's targets
   from their codes pushed to chance, the cross-entropy of its predictions against the uniform
   distribution (minimum ``log B``, reached when the code tells the batch's identities apart no better
   than chance; *ours*). Weights ``train.wsc_lambda_*`` (λ_id 5, λ_rec 10 as AEI-Net; λ_out 10,
   λ_3dmm 1, λ_rm 1; *ours*: the paper's are not known to us).
3. Identity probe update (:class:`models.wsc_net.IdentityProbe` on the detached code): it predicts an
   embedding, scored against the batch's target embeddings centred on their batch mean (a random tiny
   encoder's embeddings are all alike; centring keeps what tells them apart) by cosine over temperature
   :data:`PROBE_TEMPERATURE`; cross-entropy to the right target (*ours*). Logged: ``probe`` (that loss;
   chance ``log B``) and ``probe_acc`` (chance ``1 / B``).
4. Discriminator update on real sources and detached swaps.

``train.tiny``: the frozen identity encoder and 3DMM regressor are small random networks (fixed seeds),
for CPU smoke runs and tests. The generator's layout is the ``wsc:`` section's (``configs/train_tiny.yaml``
sets the 64 px one); ``train.size`` is not used. Checkpoint keys: ``model``, ``probe``, ``discriminator``,
``optimizer``, ``probe_optimizer``, ``disc_optimizer``. Export: ``wsc_generator.pth`` (``wsc_generator``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.discriminator import MultiscaleDiscriminator, g_hinge_loss
from models.errors import ConfigError
from models.face_recon import TinyFaceRecon, input_window, split_coefficients
from models.losses import discriminator_loss, identity_loss, reconstruction_loss
from models.weights import load_configured
from models.wsc_net import LAYOUT_KEYS, IdentityProbe, WSCGenerator
from pipeline.training.data import PairBatch
from pipeline.training.recipe import Recipe, core, require_files
from pipeline.training.recipes.faceshifter import TINY_IDENTITY_LAYERS, adam_options, identity_encoder
from stages.geometry import frontal_points
from stages.swap_faceshifter import arcface_input
from stages.swap_wsc import crop_regions

PROBE_TEMPERATURE = 0.1  # cosine / temperature: the probe's logits over the batch's identities
TINY_RECON_SEED = 20230000  # fixed, so every tiny run sees the same random 3DMM regressor
RECON_GROUPS = ("exp", "angle", "gamma", "trans")  # the non-identity 3DMM coefficients L_3dmm compares


def window_grid(m: np.ndarray, out_size: int, in_size: int, n: int, device: str) -> torch.Tensor:
    """The sampling grid ``(n, out_size, out_size, 2)`` (``F.grid_sample``, ``align_corners=False``) that
    cuts a window out of ``in_size`` crops: ``m`` ``(2, 3)`` maps the window's pixels to the crop's (pixel
    centres at integers)."""

    def normalised(size: int) -> np.ndarray:  # pixel x -> (2 x + 1) / size - 1
        return np.array([[2.0 / size, 0.0, 1.0 / size - 1.0], [0.0, 2.0 / size, 1.0 / size - 1.0], [0, 0, 1]])

    full = np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
    theta = (normalised(in_size) @ full @ np.linalg.inv(normalised(out_size)))[:2]
    theta_t = torch.tensor(theta, dtype=torch.float32).expand(n, 2, 3)
    return F.affine_grid(theta_t, [n, 3, out_size, out_size], align_corners=False).to(device)


def recon_grid(size: int, n: int, device: str, template: str = "ghost") -> torch.Tensor:
    """The sampling grid ``(n, 224, 224, 2)`` that cuts Deep3DFaceRecon's input window
    (:func:`models.face_recon.input_window` of :func:`frontal_points`) out of ``size`` crops."""
    from models.face_recon import INPUT_SIZE

    x0, y0, side = input_window(frontal_points(template, size), size)
    step = side / INPUT_SIZE
    m = np.array([[step, 0.0, x0 + 0.5 * step - 0.5], [0.0, step, y0 + 0.5 * step - 0.5]])
    return window_grid(m, INPUT_SIZE, size, n, device)


def recon_coefficients(
    net: nn.Module, images: torch.Tensor, template: str = "ghost"
) -> dict[str, torch.Tensor]:
    """The 3DMM coefficients (:func:`models.face_recon.split_coefficients`) of crops ``images``
    ``(N, 3, S, S)`` RGB in [-1, 1]: the network's window cut bilinearly (differentiable), in [0, 1]."""
    grid = recon_grid(images.shape[-1], len(images), str(images.device), template)
    window = F.grid_sample(
        (images + 1.0) / 2.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return split_coefficients(net(window))


def recon_loss(
    net: nn.Module, output: torch.Tensor, target: torch.Tensor, template: str = "ghost"
) -> torch.Tensor:
    """``L_3dmm``: the mean absolute difference of :data:`RECON_GROUPS` between ``output`` and ``target``
    (``(N, 3, S, S)`` in [-1, 1]; the target's side without gradients), each group's mean weighted 1."""
    mine = recon_coefficients(net, output, template)
    with torch.no_grad():
        theirs = recon_coefficients(net, target, template)
    return sum((mine[g] - theirs[g]).abs().mean() for g in RECON_GROUPS)


def probe_logits(predicted: torch.Tensor, identities: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` logits: cosine of each predicted embedding ``(B, D)`` with each target embedding
    ``(B, D)`` centred on the batch mean, over :data:`PROBE_TEMPERATURE`."""
    centred = identities - identities.mean(dim=0, keepdim=True)
    return F.normalize(predicted, dim=1) @ F.normalize(centred, dim=1).t() / PROBE_TEMPERATURE


def tiny_recon(device: str) -> nn.Module:
    """The frozen random 3DMM regressor of ``train.tiny`` runs (fixed seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_RECON_SEED)
        net = TinyFaceRecon()
    return net.eval().requires_grad_(False).to(device)


class WSCRecipe(Recipe):
    """WSC-swap: generator, identity probe and discriminator updates each step (module docstring)."""

    name = "wsc"
    summary = "WSC-swap generator (two target encoders, no skip connections)"
    exports: ClassVar[dict[str, str]] = {"model": "wsc_generator"}
    progress_terms = ("g", "rec", "probe")

    @classmethod
    def architecture(cls, cfg: dict) -> dict[str, Any]:
        t, w = cfg["train"], cfg["wsc"]
        layout = {k: int(w[k]) for k in LAYOUT_KEYS}
        try:  # an impossible layout fails here, before any work
            with torch.device("meta"):
                WSCGenerator(**layout)
        except ValueError as exc:
            raise ConfigError(f"wsc: {exc}") from None
        identity = (
            {"tiny": True, "layers": list(TINY_IDENTITY_LAYERS)}
            if t["tiny"]
            else {"tiny": False, "name": w["arcface"]}
        )
        return {
            "kind": "wsc",
            "size": layout["size"],
            "wsc": layout,
            "identity": identity,
            "recon": "tiny" if t["tiny"] else "face_recon",
            "regions": w["regions"],
            "disc": {
                "ndf": int(t["disc_ndf"]),
                "n_layers": int(t["disc_layers"]),
                "num_d": int(t["disc_scales"]),
            },
        }

    @classmethod
    def check_files(cls, arch: dict[str, Any], cfg: dict) -> None:
        """The identity encoder, the 3DMM regressor (when its loss is on) and the face parser (with
        ``wsc.regions=parsing``) must be in ``weights.dir``."""

        needed = []
        if not arch["identity"]["tiny"]:
            needed.append((arch["identity"]["name"], "the frozen identity encoder"))
        if arch["recon"] == "face_recon" and float(cfg["train"]["wsc_lambda_3dmm"]) > 0:
            needed.append(("face_recon", "the 3DMM loss (or train.wsc_lambda_3dmm=0)"))
        if arch["regions"] == "parsing":
            needed.append(("face_parser_bisenet", "wsc.regions=parsing (or wsc.regions=landmarks)"))
        require_files("wsc", needed, cfg)

    def __init__(
        self, arch: dict[str, Any], cfg: dict, device: str, prepare: Callable[[nn.Module], nn.Module]
    ) -> None:
        t, layout = cfg["train"], arch["wsc"]
        self.size = int(arch["size"])
        self.identity = identity_encoder(arch, cfg, device)
        self.lambda_3dmm = float(t["wsc_lambda_3dmm"])
        self.recon = None
        if self.lambda_3dmm > 0:
            self.recon = (
                tiny_recon(device)
                if arch["recon"] == "tiny"
                else load_configured("face_recon", cfg, device).eval().requires_grad_(False)
            )
        self.parser = (
            load_configured("face_parser_bisenet", cfg, device) if arch["regions"] == "parsing" else None
        )
        self.landmarker = None
        if self.parser is None:
            from stages.landmarks import LandmarkStage

            self.landmarker = LandmarkStage(cfg)
        self.weights = {
            "id": float(t["wsc_lambda_id"]),
            "rec": float(t["wsc_lambda_rec"]),
            "outside": float(t["wsc_lambda_outside"]),
            "3dmm": self.lambda_3dmm,
            "removal": float(t["wsc_lambda_removal"]),
        }
        self.model = prepare(WSCGenerator(**layout).train())
        self.probe = prepare(IdentityProbe(layout["code_channels"], layout["code_size"]).train())
        self.disc = prepare(MultiscaleDiscriminator(**arch["disc"]).train())
        self.opt = torch.optim.Adam(self.model.parameters(), **adam_options(cfg))
        self.opt_probe = torch.optim.Adam(self.probe.parameters(), **adam_options(cfg))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), **adam_options(cfg))
        self.networks = {"model": self.model, "probe": self.probe, "discriminator": self.disc}
        self.optimizers = {
            "optimizer": self.opt,
            "probe_optimizer": self.opt_probe,
            "disc_optimizer": self.opt_d,
        }

    def regions(self, images: torch.Tensor) -> torch.Tensor:
        """Face regions ``(B, 1, S, S)`` of crops ``(B, 3, S, S)`` in [-1, 1] (step 1 of the docstring)."""
        return crop_regions(images, "ghost", self.landmarker, self.parser)

    def _identity(self, images: torch.Tensor) -> torch.Tensor:
        return self.identity(arcface_input(images))

    def step(self, batch: PairBatch) -> dict[str, float]:
        """Generator, identity-probe and discriminator updates; returns the loss terms."""
        xt, xs, same = batch.target, batch.source, batch.same
        with torch.no_grad():
            z_s, z_t = self._identity(xs), self._identity(xt)
            region = self.regions(xt)
        y, code = self.model(xt, region, z_s)
        n = len(xt)

        probe, disc = core(self.probe), core(self.disc)
        probe.requires_grad_(False)
        disc.requires_grad_(False)
        uniform_ce = -F.log_softmax(probe_logits(self.probe(code), z_t), dim=1).mean()
        terms = {
            "adv": g_hinge_loss(disc(y)),
            "id": identity_loss(self._identity(y), z_s),
            "rec": reconstruction_loss(y, xt, same),
            "outside": 0.5 * ((1.0 - region) * (y - xt)).pow(2).mean(),
            "3dmm": recon_loss(self.recon, y, xt)
            if self.recon is not None
            else torch.zeros((), device=y.device),
            "removal": uniform_ce - math.log(n),  # 0 at chance
        }
        total = terms["adv"] + sum(self.weights[k] * terms[k] for k in self.weights)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()

        probe.requires_grad_(True)
        logits = probe_logits(self.probe(code.detach()), z_t)
        labels = torch.arange(n, device=logits.device)
        probe_loss = F.cross_entropy(logits, labels)
        self.opt_probe.zero_grad(set_to_none=True)
        probe_loss.backward()
        self.opt_probe.step()

        disc.requires_grad_(True)
        logits_d = self.disc(torch.cat((xs, y.detach())))
        loss_d, d_terms = discriminator_loss([m[:n] for m in logits_d], [m[n:] for m in logits_d])
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        out = {"g": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        out["probe"] = float(probe_loss.detach())
        out["probe_acc"] = float((logits.detach().argmax(dim=1) == labels).float().mean())
        return {**out, **d_terms}

    def sample_rows(self, batch: PairBatch) -> list[torch.Tensor]:
        """target | source | the target's face region (grey) | swapped."""
        net = core(self.model)
        net.eval()
        try:
            region = self.regions(batch.target)
            swapped, _ = net(batch.target, region, self._identity(batch.source))
        finally:
            net.train()
        return [batch.target, batch.source, (region * 2.0 - 1.0).expand_as(batch.target), swapped]
