"""FaceShifter swap: AEI-Net generator conditioned on the source's ArcFace identity, HEAR-Net refinement.

Target crops come from the align stage with ``align.template=ghost`` (``configs/faceshifter.yaml``):
GHOST's crop, the one its public generator was trained on, pixel for pixel (checked against the
reference vectors in ``tests/test_interop_vectors.py``). The source identity is embedded once, before the
video starts, from the source photo's GHOST 224 crop halved to 112 as GHOST does (:func:`source_identity`).
The swapped crop goes back into the frame through the inverse of the same transform (the blend stage).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.arcface import INPUT_SIZE as ARCFACE_SIZE
from models.errors import ConfigError, ModelFileError
from models.runtime import resolve_device
from models.weights import REGISTRY, load_configured
from stages.geometry import GHOST_CROP_SIZE, ghost_alignment, ghost_crops, tensor_of
from stages.mask_geometry import face_masks
from stages.types import FrameBatch, swap_inputs

GENERATOR = REGISTRY["aei_net"].normalisation  # x/127.5 - 1; HEAR-Net takes and gives the same range
ARCFACE = REGISTRY["arcface_iresnet100"].normalisation  # (x/255 - 0.5) / 0.5, as GHOST feeds ArcFace


def to_signed(crops: np.ndarray, device: str, dtype: torch.dtype) -> torch.Tensor:
    """``(N, S, S, 3) uint8`` RGB → ``(N, 3, S, S)`` RGB in [-1, 1] (the generator's input) on ``device``."""
    x = GENERATOR.to_network(tensor_of(crops).permute(0, 3, 1, 2).float())
    return x.to(device=device, dtype=dtype)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, S, S)`` RGB in [-1, 1] (the generator's output) → ``(N, S, S, 3) uint8`` RGB (rounded,
    clipped)."""
    x = GENERATOR.to_pixels(images.float().cpu()).round_().clamp_(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def arcface_input(crops: torch.Tensor) -> torch.Tensor:
    """Aligned crops ``(N, 3, S, S)`` RGB in [-1, 1] → ``(N, 3, 112, 112)``, bilinear (antialiased when
    shrinking); differentiable. For crops other than the source's (HEAR-Net's reconstruction, training)."""
    if crops.shape[-1] == ARCFACE_SIZE:
        return crops
    return F.interpolate(
        crops, size=(ARCFACE_SIZE, ARCFACE_SIZE), mode="bilinear", align_corners=False, antialias=True
    )


def ghost_identity_input(image: np.ndarray, points5: np.ndarray) -> torch.Tensor:
    """GHOST's ArcFace input for the source: the photo's 224 crop (:func:`stages.geometry.ghost_crops`) in
    [-1, 1], halved by ``F.interpolate(scale_factor=0.5, mode='bilinear', align_corners=True)``.

    image: ``(H, W, 3) uint8`` RGB; points5 ``(5, 2)`` its pixels. Returns ``(1, 3, 112, 112) float32``
    RGB in [-1, 1].
    """
    crop = ghost_crops(image[None], [0], [ghost_alignment(points5)[0]], GHOST_CROP_SIZE)
    x = ARCFACE.to_network(tensor_of(crop).permute(0, 3, 1, 2).float())
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)


def source_identity(
    image: np.ndarray, points5: np.ndarray, cfg: dict, arcface_name: str | None = None
) -> np.ndarray:
    """Raw ArcFace embedding ``(512,) float32`` of the face at ``points5`` in ``image`` (uint8 RGB), from
    :func:`ghost_identity_input`; by ArcFace ``arcface_name`` (registry name; default
    ``faceshifter.arcface``)."""
    arcface = load_configured(arcface_name or cfg["faceshifter"]["arcface"], cfg, "cpu")
    with torch.inference_mode():
        return arcface(ghost_identity_input(image, points5))[0].numpy().astype(np.float32)


def runtime_of(cfg: dict, half: bool) -> tuple[str, torch.dtype]:
    """A learned backend's device (``runtime.device``) and dtype: float16 on CUDA when ``half``, else
    float32; torch's thread count set from ``runtime.torch_threads``."""
    torch.set_num_threads(int(cfg["runtime"]["torch_threads"]))
    device = resolve_device(cfg["runtime"]["device"])
    return device, torch.float16 if (device == "cuda" and half) else torch.float32


def fill_swaps(batch: FrameBatch, size: int, cfg: dict, swap) -> FrameBatch:
    """A learned backend's stage call: the selected faces' ``(F, size, size, 3) uint8`` crops and their
    ``(F, 68, 2)`` crop landmarks through ``swap(crops, landmarks) -> (F, size, size, 3) uint8``, each face's
    ``swapped`` set, and its ``mask`` the landmark hull's (the generator draws the inner mouth itself)."""
    todo, crops, lm = swap_inputs(batch, size)
    if not todo:
        return batch
    swapped = swap(crops, lm)
    masks = face_masks(lm, cfg, keep_inner_mouth=False).numpy()
    for face, sw, m in zip(todo, swapped, masks):
        face.swapped = sw
        face.mask = m
    return batch


class FaceShifterSwapStage:
    """Sets ``swapped`` ``(S, S, 3) uint8`` RGB and ``mask`` ``(S, S) float32`` on every selected face.

    cfg ``faceshifter`` (files from ``weights.dir``): arcface (registry name), hear (auto: refine when
    ``hear_net.pth`` is there | always: its absence is an error | never), batch_size (faces per forward
    pass), half (fp16 on CUDA).
    identity: the source's raw ArcFace embedding ``(512,) float32``.
    """

    def __init__(self, cfg: dict, identity: np.ndarray) -> None:
        fs = cfg["faceshifter"]
        self.cfg = cfg
        self.size = int(cfg["align"]["crop_size"])
        trained_on = REGISTRY["aei_net"].template  # the crop the generator was trained on
        if cfg["align"]["template"] != trained_on or self.size != REGISTRY["aei_net"].crop_size:
            raise ConfigError(
                f"swap.backend=faceshifter needs align.template={trained_on} and align.crop_size="
                f"{REGISTRY['aei_net'].crop_size} (the crop its generator was trained on): "
                "use --config configs/faceshifter.yaml"
            )
        self.device, self.dtype = runtime_of(cfg, fs["half"])
        self.batch_size = int(fs["batch_size"])
        self.generator = load_configured("aei_net", cfg, self.device, self.dtype)
        self.hear = None
        self.arcface = None
        if fs["hear"] in ("auto", "always"):
            try:
                self.hear = load_configured("hear_net", cfg, self.device, self.dtype)
            except ModelFileError:
                if fs["hear"] == "always":
                    raise
            if self.hear is not None:
                self.arcface = load_configured(fs["arcface"], cfg, self.device, torch.float32)
        self.identity = torch.from_numpy(np.asarray(identity, np.float32))[None].to(self.device, self.dtype)

    @torch.inference_mode()
    def swap(self, crops: np.ndarray) -> np.ndarray:
        """Aligned target crops ``(F, S, S, 3) uint8`` RGB → swapped ``(F, S, S, 3) uint8`` RGB."""
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = to_signed(crops[start : start + self.batch_size], self.device, self.dtype)
            z = self.identity.expand(len(x), -1)
            y, _ = self.generator(x, z)
            if self.hear is not None:
                z_self = self.arcface(arcface_input(x.float())).to(self.dtype)
                reconstruction, _ = self.generator(x, z_self)
                y = self.hear(y, x - reconstruction)
            out.append(to_uint8(y))
        return np.concatenate(out)

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        return fill_swaps(batch, self.size, self.cfg, lambda crops, _: self.swap(crops))

    def flush(self) -> list[FrameBatch]:
        return []
