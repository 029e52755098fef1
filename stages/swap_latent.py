"""The adaptive-latent StyleGAN2 swap backend (``swap.backend=latent``; networks in
:mod:`models.latent_swap`, built from arXiv 2303.04186; use ``--config configs/latent.yaml``).

The source photo's FFHQ-aligned crop is encoded once to its W+ code. For every selected face, the target
crop is encoded to its W+ code and its face-region mask by the same dual-space encoder; the target code is
smoothed along the track (the codes, not the pixels: ``latent.code_smoothing``, ``w ← a w_prev + (1 − a)
w_now``, restarted at scene cuts and track gaps as the landmark smoothing is); the adaptive module mixes the
source's and the target's codes row by row and channel by channel; the frozen StyleGAN2 draws the face. The
stage sets ``swapped`` to the drawn face and ``mask`` to the encoder's mask of the target, which replaces the
landmark hull for this backend: the mask stage's occlusion and its filter along the track, and the blend
stage, then work on it as for every backend.
"""

from __future__ import annotations

import numpy as np
import torch

from models.errors import ConfigError
from models.latent_swap import to_side
from models.weights import load_configured
from stages.scene import SceneCuts, TrackMemory
from stages.swap_faceshifter import runtime_of, to_signed, to_uint8
from stages.types import FrameBatch


class LatentSwapStage:
    """Sets ``swapped`` ``(S, S, 3) uint8`` RGB and ``mask`` ``(S, S) float32`` on every selected face with
    a crop (module docstring). source_crop: the source's aligned crop
    (:func:`stages.align.crop_photo_face`)."""

    def __init__(self, cfg: dict, source_crop: np.ndarray) -> None:
        c = cfg["latent"]
        self.size = int(cfg["align"]["crop_size"])
        if cfg["align"]["template"] != "ffhq":
            raise ConfigError(
                f"swap.backend=latent needs align.template=ffhq (got {cfg['align']['template']}): "
                "use --config configs/latent.yaml"
            )
        self.device, self.dtype = runtime_of(cfg, c["half"])
        self.batch_size = int(c["batch_size"])
        self.smoothing = float(c["code_smoothing"])
        self.generator = load_configured("stylegan2_ffhq", cfg, self.device, self.dtype)
        self.net = load_configured("latent_swap", cfg, self.device, self.dtype)
        with torch.inference_mode():
            self.w_source, _ = self.net.encoder(to_signed(source_crop[None], self.device, self.dtype))
        self.scene = SceneCuts(cfg)
        self.codes = TrackMemory()

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> FrameBatch:
        cuts = self.scene.of(batch)
        todo = [
            (fi, face)
            for fi, faces in enumerate(batch.faces)
            for face in faces
            if face.selected and face.crop is not None and face.crop.shape[0] == self.size
        ]
        for start in range(0, len(todo), self.batch_size):
            part = todo[start : start + self.batch_size]
            x = to_signed(np.stack([face.crop for _, face in part]), self.device, self.dtype)
            w_target, mask = self.net.encoder(x)
            tracks = [face.track_id for _, face in part]
            frames = [(int(batch.indices[fi]), bool(cuts[fi])) for fi, _ in part]
            smoothed = self.codes.smooth_rows(batch.video_id, tracks, frames, w_target, self.smoothing)
            w, _ = self.net.swapper(self.w_source.expand_as(smoothed), smoothed)
            drawn = to_side(self.generator(w), self.size)
            weights = torch.sigmoid(mask.float())[:, 0].cpu().numpy()
            for (_, face), image, m in zip(part, to_uint8(drawn), weights):
                face.swapped = image
                face.mask = np.ascontiguousarray(m, dtype=np.float32)
        if len(batch):
            self.codes.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
