"""RSGAN attribute editing (``python -m pipeline edit --backend rsgan``; networks in :mod:`models.rsgan`,
trained with CelebA's attribute labels, ``train.rsgan_attributes``).

Each selected face's crop (RSGAN's training crop: ``align.template=ghost`` at ``rsgan.layout.size``, set by
the edit command) is encoded to its face and hair latents, and its attributes are estimated by the exported
discriminator's attribute head (the probability of each of CelebA's 40); the requested attributes are set
to their values and the generator draws the crop from both latents and the changed vector. Along a track
the latents and the estimated attributes are smoothed (``rsgan.code_smoothing``, restarted at scene cuts
and gaps). Pasted within the landmark hull, or, when a hair attribute is edited (:data:`HAIR_ATTRIBUTES`),
the whole crop with a feathered border (``mask.box_blur``), since the hair lies outside the face region.
The photo's and each track's first face's attribute estimates before and after are kept for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.errors import ConfigError
from models.rsgan import CELEBA_ATTRIBUTES
from models.weights import REGISTRY, load_configured
from stages.mask import box_masks
from stages.mask_geometry import face_masks
from stages.scene import SceneCuts, TrackMemory
from stages.swap_faceshifter import runtime_of, to_uint8
from stages.swap_rsgan import encoded_chunks, rsgan_parser
from stages.types import FrameBatch

HAIR_ATTRIBUTES = frozenset(
    {"bald", "bangs", "black_hair", "blond_hair", "brown_hair", "gray_hair", "receding_hairline",
     "straight_hair", "wavy_hair", "wearing_hat"}
)  # fmt: skip


@dataclass
class AttributeChange:
    """One face's estimated attribute probabilities before and after the edit (name → value)."""

    before: dict[str, float]
    after: dict[str, float]


class RSGANEditStage:
    """The edit command's stage for ``--backend rsgan`` (module docstring): sets ``swapped`` ``(S, S, 3)
    uint8`` and ``mask`` ``(S, S) float32`` on every selected face. request: an
    :class:`stages.attribute_edit.EditRequest`."""

    def __init__(self, cfg: dict, request) -> None:
        c = cfg["rsgan"]
        self.cfg = cfg
        self.size = int(cfg["align"]["crop_size"])
        trained_on = REGISTRY["rsgan"].template
        if cfg["align"]["template"] != trained_on or self.size != int(c["layout"]["size"]):
            raise ConfigError(
                f"edit --backend rsgan needs align.template={trained_on} and "
                "align.crop_size=rsgan.layout.size"
            )
        if int(c["layout"]["n_attr"]) != len(CELEBA_ATTRIBUTES):
            raise ConfigError(
                "edit --backend rsgan needs a model trained with attributes: rsgan.layout.n_attr=40 and "
                "train rsgan with train.rsgan_attributes=list_attr_celeba.txt"
            )
        lower = [a.lower() for a in CELEBA_ATTRIBUTES]
        self.names = list(request.attributes)
        self.ids = [lower.index(n) for n in self.names]
        self.values = torch.tensor([float(request.attributes[n]) for n in self.names])
        self.hair = any(n in HAIR_ATTRIBUTES for n in self.names)
        self.device, self.dtype = runtime_of(cfg, c["half"])
        self.batch_size = int(c["batch_size"])
        self.smoothing = float(c["code_smoothing"])
        self.net = load_configured("rsgan", cfg, self.device, self.dtype)
        self.disc = load_configured("rsgan_discriminator", cfg, self.device, self.dtype)
        self.parser = rsgan_parser(cfg, self.device)
        self.scene = SceneCuts(cfg)
        self.codes = TrackMemory()
        self.keyframe_results: dict[int, AttributeChange] = {}

    def _estimate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.disc(x)[1].float())

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> FrameBatch:
        self.scene.of(batch)  # the cuts, kept in batch.cuts
        chunks = encoded_chunks(batch, self.size, self.batch_size, self.device, self.dtype, self.parser)
        for faces, landmarks, x, face, frames in chunks:
            mu_f, _, mu_h, _ = self.net.encode(x, face)
            code = torch.cat((mu_f.float(), mu_h.float(), self._estimate(x)), dim=1)
            tracks = [f.track_id for f in faces]
            code = self.codes.smooth_rows(batch.video_id, tracks, frames, code, self.smoothing)
            z = self.net.z_dim
            attributes = code[:, 2 * z :].clone()
            before = attributes[:, self.ids].clone()
            attributes[:, self.ids] = self.values.to(attributes.device)
            drawn = self.net.generate(
                code[:, :z].to(self.dtype), code[:, z : 2 * z].to(self.dtype), attributes.to(self.dtype)
            )
            if self.hair:
                masks = box_masks(len(x), self.size, float(self.cfg["mask"]["box_blur"])).numpy()
            else:
                masks = face_masks(landmarks, self.cfg, keep_inner_mouth=False).numpy()
            for f, image, m in zip(faces, to_uint8(drawn), masks):
                f.swapped = image
                f.mask = m
            # the report: each track's first face only (the discriminator is not run on the others)
            first = {}
            for k, f in enumerate(faces):
                if int(f.track_id) not in self.keyframe_results:
                    first.setdefault(int(f.track_id), k)
            if first:
                rows = list(first.values())
                after = self._estimate(drawn[rows])[:, self.ids]
                for (track, k), estimate in zip(first.items(), after):
                    self.keyframe_results[track] = AttributeChange(
                        {n: float(v) for n, v in zip(self.names, before[k])},
                        {n: float(v) for n, v in zip(self.names, estimate)},
                    )
        if len(batch):
            self.codes.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
