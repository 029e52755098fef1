"""Align: similarity transform from each selected face's 5 points to the crop template; batched crops."""

from __future__ import annotations

from stages.geometry import crop_template, estimate_similarity, warp_crops
from stages.types import FrameBatch


class AlignStage:
    """Sets ``affine`` (frame → crop, ``(2, 3) float32``) and ``crop`` (``(S, S, 3) uint8`` RGB) on
    selected faces.

    S = ``align.crop_size``; the template is the ArcFace 5-point layout scaled by ``align.face_scale``.
    """

    def __init__(self, cfg: dict) -> None:
        a = cfg["align"]
        self.size = int(a["crop_size"])
        self.template = crop_template(self.size, float(a["face_scale"]), float(a["centre_y"]))

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        owners, matrices, records = [], [], []
        for i, faces in enumerate(batch.faces):
            for face in faces:
                if face.selected:
                    face.affine = estimate_similarity(face.points5, self.template)
                    owners.append(i)
                    matrices.append(face.affine)
                    records.append(face)
        crops = warp_crops(batch.frames, owners, matrices, self.size)
        for face, crop in zip(records, crops):
            face.crop = crop
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
