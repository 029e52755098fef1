"""WSC-swap (``swap.backend=wsc``): the generator of :mod:`models.wsc_net` on GHOST-template crops.

Each target crop is split into its face region and the rest (:func:`region_masks`: the 68 landmarks'
outline, or the face parser's classes with ``wsc.regions=parsing``); the generator's semantic encoder sees
the face, its pixel encoder the rest, and the source's ArcFace embedding (from the photo, once, as the
faceshifter backend computes it) modulates its decoder. The swapped crop is pasted back with the landmark
hull mask, as the faceshifter backend's (the inner mouth is the generator's). Weights: ``wsc_generator.pth``
exported by ``python -m pipeline train wsc``, in the layout of the config's ``wsc:`` section.
"""

from __future__ import annotations

import numpy as np
import torch

from models.errors import ConfigError
from models.weights import REGISTRY, load_configured
from stages.mask_geometry import face_region_masks
from stages.swap_faceshifter import fill_swaps, runtime_of, to_signed, to_uint8
from stages.types import FrameBatch

REGION_CLASSES = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "nose", "mouth", "u_lip", "l_lip")
"""``wsc.regions=parsing``: the face parser's classes that make the face region (ears, neck, hair, hat,
cloth and background go to the pixel encoder)."""


def region_masks(
    images: torch.Tensor, landmarks: np.ndarray | None = None, parser: torch.nn.Module | None = None
) -> torch.Tensor:
    """The face region of crops ``images`` ``(N, 3, S, S)`` RGB in [-1, 1]: ``(N, 1, S, S) float32`` in
    [0, 1] on the images' device. With ``parser`` (a BiSeNet): the summed probability of
    :data:`REGION_CLASSES`; else from ``landmarks`` ``(N, 68, 2)`` in crop pixels
    (:func:`stages.mask_geometry.face_region_masks`)."""
    if parser is not None:
        from models.bisenet import FACE_PARSING_CLASSES, class_mask, parse_faces

        ids = [FACE_PARSING_CLASSES.index(c) for c in REGION_CLASSES]
        probs = parse_faces(parser, ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0))
        return class_mask(probs, ids).to(images.device, torch.float32)
    if landmarks is None:
        raise ValueError("region_masks needs landmarks or a face parser")
    return face_region_masks(landmarks, images.shape[-1]).to(images.device)


def crop_regions(images: torch.Tensor, template: str, landmarker=None, parser=None) -> torch.Tensor:
    """Face regions ``(B, 1, S, S)`` in [0, 1] of training crops ``(B, 3, S, S)`` RGB in [-1, 1]: the face
    parser's classes (``parser``, a BiSeNet), else the outline of dlib's 68 landmarks predicted by
    ``landmarker`` (a :class:`stages.landmarks.LandmarkStage`) from where a frontal face's 5 points lie in a
    crop of ``template`` (:func:`stages.geometry.frontal_points`; the crops' own points are not at hand)."""
    if parser is not None:
        return region_masks(images, parser=parser)
    from stages.geometry import frontal_points
    from stages.types import FaceRecord

    points = frontal_points(template, images.shape[-1]).astype(np.float32)
    landmarks = []
    for crop in to_uint8(images.detach()):
        face = FaceRecord(np.zeros(4, np.float32), 1.0, points.copy())
        landmarks.append(landmarker.landmarks_for(np.ascontiguousarray(crop), [face])[0])
    return region_masks(images, np.stack(landmarks))


class WSCSwapStage:
    """Sets ``swapped`` ``(S, S, 3) uint8`` RGB and ``mask`` ``(S, S) float32`` on every selected face.

    cfg ``wsc``: the generator's layout (size, base, max_width, code_size, code_channels), arcface
    (registry name of the identity encoder the source was embedded with), regions (landmarks | parsing),
    batch_size (faces per pass), half (fp16 on CUDA). identity: the source's raw ArcFace embedding
    ``(512,) float32``.
    """

    def __init__(self, cfg: dict, identity: np.ndarray) -> None:
        w = cfg["wsc"]
        self.cfg = cfg
        self.size = int(cfg["align"]["crop_size"])
        trained_on = REGISTRY["wsc_generator"].template  # prepare-faces' crop, what train wsc learns on
        if cfg["align"]["template"] != trained_on or self.size != int(w["size"]):
            raise ConfigError(
                f"swap.backend=wsc needs align.template={trained_on} and align.crop_size=wsc.size "
                f"({w['size']}; got {cfg['align']['template']} and {self.size}): "
                "use --config configs/wsc.yaml"
            )
        self.device, self.dtype = runtime_of(cfg, w["half"])
        self.batch_size = int(w["batch_size"])
        self.generator = load_configured("wsc_generator", cfg, self.device, self.dtype)
        self.parser = None
        if w["regions"] == "parsing":
            self.parser = load_configured("face_parser_bisenet", cfg, self.device)
        self.identity = torch.from_numpy(np.asarray(identity, np.float32))[None].to(self.device, self.dtype)

    @torch.inference_mode()
    def swap(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Aligned target crops ``(F, S, S, 3) uint8`` RGB and their landmarks ``(F, 68, 2)`` in crop pixels
        → swapped ``(F, S, S, 3) uint8`` RGB."""
        out = []
        for start in range(0, len(crops), self.batch_size):
            part = slice(start, start + self.batch_size)
            x = to_signed(crops[part], self.device, self.dtype)
            region = region_masks(x, landmarks[part], self.parser).to(self.dtype)
            y, _ = self.generator(x, region, self.identity.expand(len(x), -1))
            out.append(to_uint8(y))
        return np.concatenate(out)

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        return fill_swaps(batch, self.size, self.cfg, self.swap)

    def flush(self) -> list[FrameBatch]:
        return []
