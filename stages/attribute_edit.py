"""Attribute editing (MaskFaceGAN: Pernuš, Štruc, Dobrišek 2023, arXiv 2103.11135) of aligned faces, and the
edit stage that applies it to every tracked face of a video.

**One face** (:func:`edit_face`), MaskFaceGAN's procedure as its public code (``MartinPernus/MaskFaceGAN``
``49b6c8a``) sets it, on an FFHQ-aligned crop at the generator's size R (1024 for the FFHQ file):

- masks from the face parser's class probabilities on the input, resized bilinearly to R: local edits
  (:data:`LOCAL_REGIONS`) reconstruct the skin (``recon``), blend skin plus the edited regions
  (``blend``), and hold the regions' shape at the parser's own size (``shape``, hair only); hair shape
  (wavy, straight) adds the ears to all three. Global edits (anything else, e.g. ``male``, ``young``) use
  all eight face classes for every mask.
- latent stage: W+ from the mean of the mapping network over 50,000 z (local) or the e4e inversion of the
  input (global, and every video keyframe), then Adam (lr 0.001) for ``steps_latent`` steps; loss =
  ``2 · masked MSE`` (local; global: ``0.03 · masked LPIPS``) ``+ 0.005 · KL`` of the classifier's
  attribute probability to the smoothed target (from ``classifier_from``, 500; global from the start)
  ``+ 0.5 · MSE`` of the generated hair shape to the input's (hair attributes, from 500). A fresh Adam at
  step 500 (local). Dynamic masking for steps 500-699: the parser's edited-region mask on the step's image
  is taken out of ``recon`` and added to ``dynamic`` (and to ``shape`` for hair shape). At step 700 the
  noise maps, zero until then, become fixed random maps. An e4e start begins at step 300.
- noise stage: ``steps_noise + 1`` Adam steps (lr 0.1) on the noise maps with W+ fixed: StyleGAN2's noise
  regulariser plus ``2 ×`` (global ``0.03 ×``) the masked MSE, the maps renormalised after each image.
- result: ``blend · G(W+, noise) + (1 − blend) · input``.

Choices the public code leaves open (recorded in the README's "Attribute editing" section):

- Several attributes at once: their regions are joined, the classifier term is the mean KL over them, the
  edit is local only when every attribute is, hair terms apply when any attribute is a hair one. (The
  public code edits one attribute a run.)
- A target value v in [0, 1] becomes the probability ``v − s (2v − 1)`` (s = ``smoothing``, 0.05): v = 1
  gives MaskFaceGAN's ``|1 − s|`` = 0.95, v = 0 its 0.05, values between lie on the line.
- Blend weights below ``mask_floor`` (0.002: a weight under half an 8-bit step moves no pixel by half a
  step) are set to zero, so that the pixels outside the edit are exactly the input's: a softmax is never
  zero, and without the floor every pixel of the crop would be resampled and re-rounded.
- The random noise maps of step 700 are drawn from a generator seeded with ``edit.seed`` (MaskFaceGAN's
  are unseeded), so that a run, and the Ray and in-process executors, give the same frames.
- MaskFaceGAN's ``--size`` term (resizing the region) is not built.

**Photos** (:class:`AttributeEditStage` with ``request.photo``): each face gets the procedure above as it
is. **Video** (:class:`AttributeEditStage`, which the public code does not do): per track, its first face
is the keyframe and gets the whole procedure from its e4e inversion; the edit is kept as the offset ``Δ =
W+_edit − W+_e4e`` and the keyframe's optimised noise. Every face of the track is inverted by e4e, the
codes are smoothed along the track (``code_smoothing``: ``w ← a w_prev + (1 − a) w_now``, restarted at
scene cuts and gaps, :class:`stages.scene.TrackMemory`; an untracked face is its own keyframe), and the
face is drawn as ``G(w + Δ, keyframe noise)`` and blended by the blend mask of its own parse. The
blend stage pastes it back (pixels where the mask is zero are never written).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from models.attribute_classifier import ATTRIBUTES
from models.deeplab_parser import CLASSES, region_mask
from stages.geometry import to_tensor, to_uint8
from stages.scene import SceneCuts, TrackMemory
from stages.types import FrameBatch

# MaskFaceGAN's local attributes and the parser classes each edits (``attr2regions``).
LOCAL_REGIONS: dict[str, tuple[str, ...]] = {
    "wearing_lipstick": ("mouth",),
    "mouth_slightly_open": ("mouth",),
    "smiling": ("mouth",),
    "bushy_eyebrows": ("eyebrows",),
    "arched_eyebrows": ("eyebrows",),
    "narrow_eyes": ("eyes",),
    "pointy_nose": ("nose",),
    "big_nose": ("nose",),
    "black_hair": ("hair",),
    "brown_hair": ("hair",),
    "blond_hair": ("hair",),
    "gray_hair": ("hair",),
    "wavy_hair": ("hair",),
    "straight_hair": ("hair",),
}
HAIR_SHAPE = ("wavy_hair", "straight_hair")
FACE_CLASSES = CLASSES[1:]  # every class but the background: a global edit's masks
E4E_START_STEP = 300  # MaskFaceGAN's latent stage starts here from an e4e inversion


class EditError(ValueError):
    """An attribute request that cannot be edited (unknown name, value out of range)."""


def parse_attributes(texts: list[str]) -> dict[str, float]:
    """``["smiling=1", "Male=0"]`` → ``{"smiling": 1.0, "male": 0.0}`` (CelebA names, any case; values in
    [0, 1]). EditError naming the bad item."""
    out: dict[str, float] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip().lower()
        if not sep:
            raise EditError(f"--attribute {text!r}: give NAME=VALUE, e.g. smiling=1")
        if name not in ATTRIBUTES:
            raise EditError(
                f"--attribute {text!r}: unknown attribute {name!r}; known: {', '.join(ATTRIBUTES)}"
            )
        try:
            v = float(value)
        except ValueError:
            raise EditError(f"--attribute {text!r}: the value must be a number in [0, 1]") from None
        if not 0.0 <= v <= 1.0:
            raise EditError(f"--attribute {text!r}: the value must be in [0, 1] (1 = has it, 0 = has it not)")
        out[name] = v
    if not out:
        raise EditError("no --attribute given: name at least one, e.g. --attribute smiling=1")
    return out


@dataclass(frozen=True)
class EditPlan:
    """What one edit request changes: attribute names, target probabilities and the parser classes of each
    mask (module docstring)."""

    names: tuple[str, ...]
    targets: tuple[float, ...]
    local: bool
    hair: bool
    hair_shape: bool
    recon: tuple[str, ...]
    blend: tuple[str, ...]
    shape: tuple[str, ...]
    dynamic: tuple[str, ...]

    @classmethod
    def of(cls, attributes: dict[str, float], smoothing: float, force_global: bool = False) -> EditPlan:
        names = tuple(attributes)
        targets = tuple(float(attributes[n]) - smoothing * (2.0 * float(attributes[n]) - 1.0) for n in names)
        local = not force_global and all(n in LOCAL_REGIONS for n in names)
        hair = any(n in LOCAL_REGIONS and "hair" in LOCAL_REGIONS[n] for n in names)
        hair_shape = any(n in HAIR_SHAPE for n in names)
        if not local:
            return cls(names, targets, False, False, False, FACE_CLASSES, FACE_CLASSES, (), FACE_CLASSES)
        regions = tuple(dict.fromkeys(r for n in names for r in LOCAL_REGIONS[n]))
        ears = ("ears",) if hair_shape else ()
        return cls(
            names,
            targets,
            True,
            hair,
            hair_shape,
            recon=("skin", *ears),
            blend=tuple(dict.fromkeys(("skin", *regions, *ears))),
            shape=tuple(dict.fromkeys((*regions, *ears))),
            dynamic=regions,
        )

    @property
    def attribute_ids(self) -> list[int]:
        return [ATTRIBUTES.index(n) for n in self.names]


@dataclass(frozen=True)
class EditSettings:
    """The procedure's numbers (config section ``edit``; MaskFaceGAN's ``config.yml`` values by default)."""

    steps_latent: int
    steps_noise: int
    lr_latent: float
    lr_noise: float
    classifier_from: int
    dynamic_steps: int
    e4e_start: int
    reinit: bool
    w_classifier: float
    w_mse: float
    w_lpips: float
    w_seg: float
    w_noise: float
    mask_floor: float
    seed: int

    @classmethod
    def of(cls, edit: dict) -> EditSettings:
        w = edit["weights"]
        return cls(
            steps_latent=int(edit["steps_latent"]),
            steps_noise=int(edit["steps_noise"]),
            lr_latent=float(edit["lr_latent"]),
            lr_noise=float(edit["lr_noise"]),
            classifier_from=int(edit["classifier_from"]),
            dynamic_steps=int(edit["dynamic_steps"]),
            e4e_start=int(edit["e4e_start"]),
            reinit=bool(edit["reinit"]),
            w_classifier=float(w["classifier"]),
            w_mse=float(w["mse"]),
            w_lpips=float(w["lpips"]),
            w_seg=float(w["seg"]),
            w_noise=float(w["noise"]),
            mask_floor=float(edit["mask_floor"]),
            seed=int(edit["seed"]),
        )


@dataclass
class EditNetworks:
    """The frozen networks of an edit, on one device, float32.

    generator: StyleGAN2 (:class:`models.stylegan2.Generator`), W+ ``(N, n_latent, D)`` → RGB in [-1, 1].
    classifier: BranchedTiny, ``(N, 3, H, W)`` RGB in [0, 1] → ``(N, 40)`` logits. parser: MaskFaceGAN's
    parser (``probabilities(image01)`` → ``(N, 9, P, P)``). encoder: e4e, ``(N, 3, E, E)`` RGB in [-1, 1]
    → W+ offsets; latent_avg ``(n_latent, D)`` is added to them. lpips: the masked LPIPS (global edits
    only; None otherwise). mean_samples: z samples of the mapping network's mean (:meth:`mean_latent`).
    """

    generator: torch.nn.Module
    classifier: torch.nn.Module
    parser: torch.nn.Module
    encoder: torch.nn.Module
    latent_avg: torch.Tensor
    lpips: torch.nn.Module | None = None
    mean_samples: int = 50_000
    latent_mean: torch.Tensor | None = None  # computed when a local edit first needs it

    def mean_latent(self) -> torch.Tensor:
        """The mapping network's mean W ``(D,)`` (:func:`mapping_mean`), computed once."""
        if self.latent_mean is None:
            self.latent_mean = mapping_mean(self.generator, self.mean_samples)
        return self.latent_mean

    @property
    def size(self) -> int:
        return int(self.generator.size)

    def draw(self, wplus: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """``(N, 3, R, R)`` RGB, ``image * 0.5 + 0.5`` (MaskFaceGAN's ``to_01``, not clamped)."""
        return self.generator(wplus, noise=noise) * 0.5 + 0.5

    def invert(self, image01: torch.Tensor) -> torch.Tensor:
        """e4e's W+ ``(N, n_latent, D)`` of faces ``(N, 3, R, R)`` RGB in [0, 1] (area-resized to its input,
        latent_avg added), as MaskFaceGAN's ``Encoder``."""
        size = int(self.encoder.input_size)
        x = image01 if image01.shape[-1] == size else F.interpolate(image01, size=(size, size), mode="area")
        return self.encoder(x * 2.0 - 1.0) + self.latent_avg

    def parse(self, image01: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, 9, P, P)`` of faces ``(N, 3, R, R)`` RGB in [0, 1]."""
        return self.parser.probabilities(image01)


def mapping_mean(generator: torch.nn.Module, samples: int = 50_000, seed: int = 0) -> torch.Tensor:
    """Mean of the mapping network over ``samples`` standard normal z ``(D,)`` (MaskFaceGAN's
    ``latent_mean``, its start for local edits); in chunks, seeded, so it is the same every run."""
    gen = torch.Generator().manual_seed(seed)
    dim = int(generator.style_dim)
    device = next(generator.parameters()).device
    total = torch.zeros(dim, dtype=torch.float64)
    done = 0
    with torch.no_grad():
        while done < samples:
            n = min(4096, samples - done)
            z = torch.randn(n, dim, generator=gen).to(device)
            total += generator.mapping(z).double().sum(0).cpu()
            done += n
    return (total / samples).float().to(device)


def noise_regularize(noise: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 projection's noise regulariser ``(N,)``: squared mean products of each map with itself
    shifted by one pixel in x and in y (wrapping), summed over octaves (2x2 means) down to 8x8."""
    loss = noise[0].new_zeros(noise[0].shape[0])
    for n in noise:
        size = n.shape[-1]
        while True:
            loss = loss + (n * torch.roll(n, 1, dims=3)).mean((1, 2, 3)).pow(2)
            loss = loss + (n * torch.roll(n, 1, dims=2)).mean((1, 2, 3)).pow(2)
            if size <= 8:
                break
            n = F.avg_pool2d(n, 2)
            size //= 2
    return loss


def noise_normalize_(noise: list[torch.Tensor]) -> None:
    """Each map to zero mean and unit (unbiased) std per sample, in place through ``.data`` as the
    reference does (the step's graph, already built on these maps, then sees the new values)."""
    with torch.no_grad():
        for n in noise:
            n.data.sub_(n.mean(dim=(1, 2, 3), keepdim=True)).div_(n.std(dim=(1, 2, 3), keepdim=True))


def attribute_kl(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ predicted) of the two-outcome distributions ``[t, 1 − t]`` and ``[p, 1 − p]``, mean over
    the attributes: ``(N, A)`` each → ``(N,)`` (MaskFaceGAN's ``kl_divergence``, i.e. ``F.kl_div``)."""
    p = torch.stack((probs, 1.0 - probs), dim=-1)
    t = torch.stack((targets, 1.0 - targets), dim=-1).expand_as(p)
    return F.kl_div(p.log(), t, reduction="none").sum(-1).mean(-1)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over (C, H, W) of ``mask · (a − b)²`` ``(N,)`` (MaskFaceGAN's ``batch_mse_loss``)."""
    err = (a - b).pow(2)
    return (err if mask is None else err * mask).mean(dim=(1, 2, 3))


def image_masks(probs: torch.Tensor, plan: EditPlan, size: int) -> dict[str, torch.Tensor]:
    """The edit's masks ``(N, 1, size, size)`` in [0, 1] from class probabilities (``shape`` at the
    parser's own size), as MaskFaceGAN's ``get_image_masks``."""
    masks = {
        "recon": region_mask(probs, plan.recon, size),
        "blend": region_mask(probs, plan.blend, size),
        "dynamic": region_mask(probs, plan.dynamic, size),
    }
    if plan.local:
        masks["shape"] = region_mask(probs, plan.shape, None)
    return {k: v.clamp(0.0, 1.0) for k, v in masks.items()}


@dataclass
class EditResult:
    """One face's edit: ``image`` the generated face and ``composite`` the blended one ``(1, 3, R, R)`` RGB
    [0, 1]; ``blend`` ``(1, 1, R, R)`` the paste weight (``mask_floor`` applied); ``wplus`` the final W+,
    ``start`` the W+ it started from, ``noise`` the optimised maps; ``losses`` one dict per step
    (``stage``, ``step``, each weighted term and ``total``); ``before`` / ``after`` each attribute's
    classifier probability on the input and on the composite."""

    image: torch.Tensor
    composite: torch.Tensor
    blend: torch.Tensor
    wplus: torch.Tensor
    start: torch.Tensor
    noise: list[torch.Tensor]
    losses: list[dict] = field(default_factory=list)
    before: dict[str, float] = field(default_factory=dict)  # classifier probability on the input
    after: dict[str, float] = field(default_factory=dict)  # and on the composite


def floor_mask(mask: torch.Tensor, floor: float) -> torch.Tensor:
    """``mask`` with the weights below ``floor`` set to zero (pixels there are not written)."""
    return torch.where(mask >= floor, mask, torch.zeros_like(mask))


def edit_face(
    image01: torch.Tensor,
    plan: EditPlan,
    nets: EditNetworks,
    settings: EditSettings,
    start: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EditResult:
    """MaskFaceGAN's procedure (module docstring) on one FFHQ-aligned face ``(1, 3, R, R)`` RGB in [0, 1].

    start: W+ ``(1, n_latent, D)`` to begin from at step ``e4e_start`` (an e4e inversion); None: the
    mapping mean at step 0 for a local edit, the e4e inversion of ``image01`` for a global one.
    progress: called with (steps done, steps in all).
    """
    s = settings
    device = image01.device
    image01 = image01.detach()
    with torch.no_grad():
        masks = image_masks(nets.parse(image01), plan, nets.size)
    original = copy.deepcopy(masks)
    if start is None and not plan.local:
        with torch.no_grad():
            start = nets.invert(image01)
    if start is None:
        wplus = nets.mean_latent().expand(1, nets.generator.n_latent, -1).clone()
        first = 0
    else:
        wplus = start.detach().clone()
        first = min(s.e4e_start, s.steps_latent)
    begin = wplus.clone()
    wplus.requires_grad_(True)
    noise = [torch.zeros(shape, device=device) for shape in nets.generator.noise_shapes()]
    targets = torch.tensor(plan.targets, device=device)[None]
    ids = plan.attribute_ids
    classifier_from = s.classifier_from if plan.local else 0
    dyn_end = s.classifier_from + s.dynamic_steps
    dynamic = plan.local  # MaskFaceGAN: on for every local edit, off for global ones
    w_recon = s.w_mse if plan.local else s.w_lpips
    seg = plan.hair and s.w_seg > 0
    losses: list[dict] = []
    total_steps = (s.steps_latent - first) + (s.steps_noise + 1)
    optimiser = torch.optim.Adam([wplus], lr=s.lr_latent)

    def recon_loss(image: torch.Tensor) -> torch.Tensor:
        if plan.local:
            return masked_mse(image01, image, masks["recon"])
        return nets.lpips(image01, image, mask=masks["recon"], normalize=True).flatten()

    for i in range(first, s.steps_latent):
        if s.reinit and plan.local and i == s.classifier_from:
            optimiser = torch.optim.Adam([wplus], lr=s.lr_latent)
        if i == dyn_end and s.steps_noise > 0:  # seeded: every run and executor draws the same maps
            gen = torch.Generator().manual_seed(s.seed)
            noise = [torch.randn(n.shape, generator=gen).to(device) for n in noise]
        image = nets.draw(wplus, noise)
        terms = {"recon": w_recon * recon_loss(image).sum()}
        if s.w_classifier > 0 and i >= classifier_from:
            probs = torch.sigmoid(nets.classifier(image)[:, ids])
            terms["classifier"] = s.w_classifier * attribute_kl(probs, targets).sum()
        if seg and i >= s.classifier_from:
            shape = region_mask(nets.parse(image), plan.shape, None)
            terms["seg"] = s.w_seg * masked_mse(shape, masks["shape"]).sum()
        total = sum(terms.values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        if dynamic and s.classifier_from <= i < dyn_end:
            with torch.no_grad():
                d = region_mask(nets.parse(image.detach()), plan.dynamic, nets.size)
                masks["recon"] = (original["recon"] - d).clamp(0.0, 1.0)
                masks["dynamic"] = (original["dynamic"] + d).clamp(0.0, 1.0)
                if plan.hair_shape:
                    small = F.interpolate(d, size=masks["shape"].shape[-2:], mode="area")
                    masks["shape"] = (original["shape"] + small).clamp(0.0, 1.0)
        losses.append(_row("latent", i, terms, total))
        if progress:
            progress(len(losses), total_steps)

    wplus = wplus.detach()
    noise = [n.clone().requires_grad_(True) for n in noise]
    optimiser = torch.optim.Adam(noise, lr=s.lr_noise)
    for i in range(s.steps_noise + 1):
        image = nets.draw(wplus, noise)
        terms = {"noise": s.w_noise * noise_regularize(noise).sum()}
        noise_normalize_(noise)
        terms["recon"] = w_recon * masked_mse(image01, image, masks["recon"]).sum()
        total = sum(terms.values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        losses.append(_row("noise", i, terms, total))
        if progress:
            progress(len(losses), total_steps)

    noise = [n.detach() for n in noise]
    with torch.no_grad():
        image = nets.draw(wplus, noise)
        blend = floor_mask(masks["blend"], s.mask_floor)
        composite = blend * image + (1.0 - blend) * image01
        probs = torch.sigmoid(nets.classifier(torch.cat((image01, composite.clamp(0.0, 1.0))))[:, ids])
    before = {n: float(p) for n, p in zip(plan.names, probs[0])}
    after = {n: float(p) for n, p in zip(plan.names, probs[1])}
    return EditResult(image, composite, blend, wplus, begin, noise, losses, before, after)


def _row(stage: str, step: int, terms: dict[str, torch.Tensor], total: torch.Tensor) -> dict:
    values = {k: float(v.detach()) for k, v in terms.items()}
    return {"stage": stage, "step": step, **values, "total": float(total.detach())}


def load_edit_networks(cfg: dict, plan: EditPlan, device: str) -> EditNetworks:
    """The registry's files for an edit (``weights.dir``; layouts from the config's ``stylegan2``,
    ``edit.e4e``, ``edit.parser`` and ``edit.classifier``): one-line ModelFileError for a missing one."""
    from models.e4e import latent_avg_of
    from models.weights import load_configured, locate_configured, pinned_sha256

    generator = load_configured("stylegan2_ffhq", cfg, device)
    encoder = load_configured("e4e_encoder", cfg, device)
    latent_avg = latent_avg_of(locate_configured("e4e_encoder", cfg), generator.n_latent).to(device)
    lpips = None
    if not plan.local:
        from models.lpips import load_lpips

        lpips = load_lpips(cfg["weights"]["dir"], device, pinned_sha256("vgg16_imagenet", cfg))
    return EditNetworks(
        generator=generator,
        classifier=load_configured("maskfacegan_classifier", cfg, device),
        parser=load_configured("maskfacegan_parser", cfg, device),
        encoder=encoder,
        latent_avg=latent_avg,
        lpips=lpips,
        mean_samples=int(cfg["edit"]["mean_samples"]),
    )


def edit_weights(plan: EditPlan) -> list[str]:
    """Registry names of the files an edit loads (checked before any work)."""
    names = ["stylegan2_ffhq", "e4e_encoder", "maskfacegan_classifier", "maskfacegan_parser"]
    return names if plan.local else [*names, "vgg16_imagenet"]


@dataclass(frozen=True)
class EditRequest:
    """What an edit stage is built with: the attributes to set (``{name: value in [0, 1]}``), whether to
    force a global edit (MaskFaceGAN), and the method: ``maskfacegan`` (:class:`AttributeEditStage`) or
    ``rsgan`` (:class:`stages.edit_rsgan.RSGANEditStage`)."""

    attributes: dict[str, float]
    force_global: bool = False
    backend: str = "maskfacegan"
    photo: bool = False  # a photo: MaskFaceGAN's procedure as it is (its start), no video offset


@dataclass
class _TrackEdit:
    offset: torch.Tensor  # (1, n_latent, D) W+ edit − W+ e4e of the keyframe
    noise: list[torch.Tensor]


class AttributeEditStage:
    """The edit command's stage, in the swap's place of the chain: sets ``swapped`` (the edited face,
    ``(R, R, 3) uint8`` RGB) and ``mask`` (its blend mask, ``(R, R) float32``, zero below ``mask_floor``)
    on every selected face with a crop (module docstring: keyframe per track, latent offset, smoothing).
    Faces must be FFHQ-aligned at the generator's size (``align.template=ffhq``, ``align.crop_size=R``;
    the edit command sets both).

    ``keyframe_results`` keeps each track's :class:`EditResult` (its losses) for the command's report. For
    a photo (``request.photo``) every face gets MaskFaceGAN's procedure exactly, from its own start, and its
    result is the generated face with the input's blend mask (what ``generate_result`` composites).
    """

    def __init__(self, cfg: dict, request: EditRequest) -> None:
        from stages.swap_faceshifter import runtime_of

        self.cfg = cfg
        edit = cfg["edit"]
        self.plan = EditPlan.of(request.attributes, float(edit["smoothing"]), request.force_global)
        self.settings = EditSettings.of(edit)
        self.smoothing = float(edit["code_smoothing"])
        self.photo = request.photo
        self.device, _ = runtime_of(cfg, half=False)
        self.nets = load_edit_networks(cfg, self.plan, self.device)
        if int(cfg["align"]["crop_size"]) != self.nets.size or cfg["align"]["template"] != "ffhq":
            raise ValueError(
                f"the edit needs FFHQ crops of the generator's {self.nets.size} px: "
                "align.template=ffhq and align.crop_size must match stylegan2.size"
            )
        self.tracks: dict[tuple[str, int], _TrackEdit] = {}
        self.keyframe_results: dict[int, EditResult] = {}
        self.scene = SceneCuts(cfg)
        self.codes = TrackMemory()  # each track's smoothed e4e code

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        todo = [
            (fi, face)
            for fi, faces in enumerate(batch.faces)
            for face in faces
            if face.selected and face.crop is not None and face.crop.shape[0] == self.nets.size
        ]
        if not todo:
            return batch
        crops = to_tensor(np.stack([face.crop for _, face in todo])).to(self.device)
        if not self.photo:  # each face's e4e code and parse (a photo's edit makes its own start and masks)
            with torch.no_grad():
                chunks = [crops[k : k + 4] for k in range(0, len(todo), 4)]
                codes = torch.cat([self.nets.invert(c) for c in chunks])
                probs = torch.cat([self.nets.parse(c) for c in chunks])
        cuts = self.scene.of(batch)
        for k, (fi, face) in enumerate(todo):
            key = (batch.video_id, int(face.track_id))
            state = self.tracks.get(key)
            if self.photo:  # MaskFaceGAN's own start (the mapping mean, or e4e for a global edit)
                result = edit_face(crops[k : k + 1], self.plan, self.nets, self.settings)
                self.keyframe_results[len(self.keyframe_results)] = result
                face.swapped = to_uint8(result.image.clamp(0.0, 1.0).float().cpu())[0]
                face.mask = result.blend[0, 0].float().cpu().numpy()
                continue
            if state is None or face.track_id < 0:
                result = edit_face(
                    crops[k : k + 1], self.plan, self.nets, self.settings, start=codes[k : k + 1]
                )
                state = _TrackEdit(result.wplus - result.start, result.noise)
                if face.track_id >= 0:
                    self.tracks[key] = state
                self.keyframe_results[int(face.track_id)] = result
            frame = int(batch.indices[fi])
            code = self.codes.smooth(
                batch.video_id, face.track_id, frame, bool(cuts[fi]), codes[k : k + 1], self.smoothing
            )
            with torch.no_grad():
                image = self.nets.draw(code + state.offset, state.noise)
                blend = floor_mask(
                    image_masks(probs[k : k + 1], self.plan, self.nets.size)["blend"],
                    self.settings.mask_floor,
                )
            face.swapped = to_uint8(image.clamp(0.0, 1.0).float().cpu())[0]
            face.mask = blend[0, 0].float().cpu().numpy()
        self.codes.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
