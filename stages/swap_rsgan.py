"""The RSGAN swap backend (``swap.backend=rsgan``; networks in :mod:`models.rsgan`; use ``--config
configs/rsgan.yaml``).

The source photo's face region is encoded once to its face latent (the mean of the face VAE's posterior).
For every selected face, the target crop's hair region (everything outside the face region: hair, the rest
of the head, the background) is encoded to its hair latent, smoothed along the track (the codes, not the
pixels: ``rsgan.code_smoothing``, ``h ← a h_prev + (1 − a) h_now``, restarted at scene cuts and gaps), and
the generator draws the crop from the source's face latent and the target's hair latent (attributes: 0.5
each when the model has any). The face regions are the outlines of the 68 landmarks, as training cuts them
(:func:`stages.mask_geometry.face_region_masks`): for the targets from the pipeline's own landmarks, for the
source from dlib seeded at the crop's frontal points (:func:`stages.swap_wsc.crop_regions`). The stage sets
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
from stages.types import FrameBatch, swap_inputs


class RSGANSwapStage:
    """Sets ``swapped`` ``(S, S, 3) uint8`` RGB and ``mask`` ``(S, S) float32`` on every selected face
    (module docstring). source_crop: the source's aligned crop (:func:`stages.align.crop_photo_face`)."""

    def __init__(self, cfg: dict, source_crop: np.ndarray) -> None:
        from stages.landmarks import LandmarkStage
        from stages.swap_wsc import crop_regions

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
        x = to_signed(source_crop[None], self.device, self.dtype)
        with torch.inference_mode():
            face = crop_regions(x.float(), trained_on, LandmarkStage(cfg)).to(self.dtype)
            self.z_face = self.net.encode(x, face)[0]
        self.scene = SceneCuts(cfg)
        self.codes = TrackMemory()

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> FrameBatch:
        cuts = self.scene.of(batch)
        frame_of = {id(f): fi for fi, faces in enumerate(batch.faces) for f in faces}
        todo, crops, landmarks = swap_inputs(batch, self.size)
        for start in range(0, len(todo), self.batch_size):
            part = slice(start, start + self.batch_size)
            x = to_signed(crops[part], self.device, self.dtype)
            face = face_region_masks(landmarks[part], self.size).to(self.device, self.dtype)
            mu_hair = self.net.encode(x, face)[2]
            hair = []
            for k, f in enumerate(todo[part]):
                fi = frame_of[id(f)]
                hair.append(
                    self.codes.smooth(
                        batch.video_id,
                        f.track_id,
                        int(batch.indices[fi]),
                        bool(cuts[fi]),
                        mu_hair[k : k + 1],
                        self.smoothing,
                    )
                )
            drawn = self.net.generate(self.z_face.expand(len(x), -1), torch.cat(hair))
            masks = face_masks(landmarks[part], self.cfg, keep_inner_mouth=False).numpy()
            for f, image, m in zip(todo[part], to_uint8(drawn), masks):
                f.swapped = image
                f.mask = m
        if len(batch):
            self.codes.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
