"""The RSGAN swap backend (``swap.backend=rsgan``; networks in :mod:`models.rsgan`; use ``--config
configs/rsgan.yaml``).

The source photo's face region is encoded once to its face latent (the mean of the face VAE's posterior).
For every selected face, the target crop's hair region (everything outside the face region: hair, the rest
of the head, the background) is encoded to its hair latent, smoothed along the track (the codes, not the
pixels: ``rsgan.code_smoothing``, ``h ← a h_prev + (1 − a) h_now``, restarted at scene cuts and gaps), and
the generator draws the crop from the source's face latent and the target's hair latent (attributes: 0.5
each when the model has any). The face regions are the outlines of the 68 landmarks, as training cuts them
(:func:`stages.mask_geometry.face_region_masks`): for the targets from the pipeline's own landmarks, for the
source from dlib seeded at the crop's frontal points (:func:`stages.swap_wsc.crop_regions`); or, with
``rsgan.regions=parsing``, the face parser's classes for both. The stage sets
``swapped`` and the landmark hull ``mask``; the mask and blend stages work on them as for every backend.
"""

from __future__ import annotations

import numpy as np
import torch

from models.errors import ConfigError
from models.weights import REGISTRY, load_configured
from stages.mask_geometry import face_masks, face_region_masks
from stages.scene import SceneCuts, TrackMemory
from stages.swap_faceshifter import runtime_of, to_signed, to_uint8
from stages.swap_wsc import crop_regions, region_masks
from stages.types import FrameBatch, swap_inputs


def encoded_chunks(
    batch: FrameBatch, size: int, batch_size: int, device: str, dtype: torch.dtype, parser=None
):
    """The batch's selected faces in chunks of ``batch_size``, in the order that keeps tracks in frame order
    (:func:`stages.types.swap_inputs`): yields ``(faces, landmarks (F, 68, 2) crop pixels, crops (F, 3, S,
    S) in [-1, 1], face regions (F, 1, S, S), frames)`` where ``frames`` holds each face's ``(frame
    number, scene cut there)`` (cuts from :class:`stages.scene.SceneCuts` kept in ``batch.cuts``). The face
    regions: the landmarks' outline, or the face parser's classes with ``parser`` (a BiSeNet)."""
    cuts = batch.cuts if batch.cuts is not None else np.zeros(len(batch), bool)
    frame_of = {id(f): fi for fi, faces in enumerate(batch.faces) for f in faces}
    todo, crops, landmarks = swap_inputs(batch, size)
    for start in range(0, len(todo), batch_size):
        part = slice(start, start + batch_size)
        faces = todo[part]
        frames = [(int(batch.indices[frame_of[id(f)]]), bool(cuts[frame_of[id(f)]])) for f in faces]
        x = to_signed(crops[part], device, dtype)
        if parser is not None:
            face = region_masks(x.float(), parser=parser).to(dtype)
        else:
            face = face_region_masks(landmarks[part], size).to(device, dtype)
        yield faces, landmarks[part], x, face, frames


def rsgan_parser(cfg: dict, device: str):
    """The face parser (BiSeNet, ``face_parser_bisenet``) with ``rsgan.regions=parsing``, else None."""
    if cfg["rsgan"]["regions"] != "parsing":
        return None
    return load_configured("face_parser_bisenet", cfg, device)


class RSGANSwapStage:
    """Sets ``swapped`` ``(S, S, 3) uint8`` RGB and ``mask`` ``(S, S) float32`` on every selected face
    (module docstring). source_crop: the source's aligned crop (:func:`stages.align.crop_photo_face`)."""

    def __init__(self, cfg: dict, source_crop: np.ndarray) -> None:
        from stages.landmarks import LandmarkStage

        c = cfg["rsgan"]
        self.cfg = cfg
        self.size = int(cfg["align"]["crop_size"])
        trained_on = REGISTRY["rsgan"].template  # prepare-faces' crop, what train rsgan learns on
        if cfg["align"]["template"] != trained_on or self.size != int(c["layout"]["size"]):
            raise ConfigError(
                f"swap.backend=rsgan needs align.template={trained_on} and align.crop_size=rsgan.layout.size "
                f"({c['layout']['size']}; got {cfg['align']['template']} and {self.size}): "
                "use --config configs/rsgan.yaml"
            )
        self.device, self.dtype = runtime_of(cfg, c["half"])
        self.batch_size = int(c["batch_size"])
        self.smoothing = float(c["code_smoothing"])
        self.net = load_configured("rsgan", cfg, self.device, self.dtype)
        self.parser = rsgan_parser(cfg, self.device)
        x = to_signed(source_crop[None], self.device, self.dtype)
        with torch.inference_mode():
            face = crop_regions(x.float(), trained_on, LandmarkStage(cfg), self.parser).to(self.dtype)
            self.z_face = self.net.encode(x, face)[0]
        self.scene = SceneCuts(cfg)
        self.codes = TrackMemory()

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> FrameBatch:
        self.scene.of(batch)  # the cuts, kept in batch.cuts
        for faces, landmarks, x, face, frames in encoded_chunks(
            batch, self.size, self.batch_size, self.device, self.dtype, self.parser
        ):
            mu_hair = self.net.encode(x, face)[2]
            tracks = [f.track_id for f in faces]
            hair = self.codes.smooth_rows(batch.video_id, tracks, frames, mu_hair, self.smoothing)
            drawn = self.net.generate(self.z_face.expand(len(x), -1), hair)
            masks = face_masks(landmarks, self.cfg, keep_inner_mouth=False).numpy()
            for f, image, m in zip(faces, to_uint8(drawn), masks):
                f.swapped = image
                f.mask = m
        if len(batch):
            self.codes.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
