"""Align: a similarity transform from each selected face's 5 points to the crop template; batched crops."""

from __future__ import annotations

import numpy as np

from stages.geometry import (
    GHOST_CROP_SIZE,
    crop_template,
    estimate_similarity,
    ffhq_alignment,
    ghost_alignment,
    ghost_crops,
    resize_affine,
    warp_crops,
)
from stages.types import FrameBatch


def alignment(points5: np.ndarray, align: dict) -> tuple[np.ndarray, np.ndarray]:
    """How one face is cut out, per the ``align`` config section.

    ``template: arcface``: the ArcFace 5-point layout scaled by ``face_scale`` and centred at
    ``(0.5, centre_y)`` of a ``crop_size`` crop, one warp. ``ghost``: GHOST's crop, the best of
    insightface's five pose templates at 224 px (:func:`stages.geometry.ghost_alignment`), then that crop
    resized to ``crop_size`` (face_scale and centre_y unused). ``ffhq``: the FFHQ dataset's square around
    eyes and mouth at ``crop_size`` (:func:`stages.geometry.ffhq_alignment`; StyleGAN2's FFHQ generator, e4e
    and MaskFaceGAN work on it).
    points5: ``(5, 2)`` frame pixels. Returns the frame → crop transform ``(2, 3) float32`` (what later
    stages use to map points and to paste back) and the matrix :func:`crop_faces` warps with (the same
    transform, or for ``ghost`` the frame → 224 one in float64).
    """
    size = int(align["crop_size"])
    if align["template"] == "ghost":
        m224 = ghost_alignment(points5)[0]
        return resize_affine(m224, GHOST_CROP_SIZE, size).astype(np.float32), m224
    if align["template"] == "ffhq":
        m = ffhq_alignment(points5, size).astype(np.float32)
        return m, m
    template = crop_template(size, float(align["face_scale"]), float(align["centre_y"]))
    m = estimate_similarity(points5, template)
    return m, m


def face_crop_size(affine: np.ndarray, align: dict) -> int:
    """Side of the crop a face small in the frame is cut to (``template: arcface`` only).

    affine: the face's frame → crop transform at ``align.crop_size`` (:func:`alignment`). The side at which
    a crop pixel spans one frame pixel, rounded up to a multiple of ``align.crop_step`` and kept between
    ``align.min_crop_size`` and ``crop_size``: a 30 px-eyed face in a crowd is not blown up to a 256 px crop
    (four times the work in every crop stage for no detail the frame has), and a large face keeps the full
    crop. Rounding up never samples the frame coarser than its pixels; the steps keep a batch's sides few.
    ``ghost`` (the learned backend's input) is always ``crop_size``.
    """
    size = int(align["crop_size"])
    smallest = int(align.get("min_crop_size", size))
    if align["template"] != "arcface" or smallest >= size:
        return size
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(affine, np.float64)[:, :2]))))  # crop px / frame px
    step = int(align["crop_step"])
    side = step * int(np.ceil(size / max(scale, 1e-6) / step))
    return int(min(size, max(smallest, side)))


def crop_faces(
    frames: np.ndarray,
    frame_of_face: list[int],
    warps: list[np.ndarray],
    align: dict,
    size: int | None = None,
) -> np.ndarray:
    """Aligned crops ``(F, S, S, 3) uint8`` (channel order of ``frames``), S = ``size`` or else
    ``align.crop_size``.

    frames ``(N, H, W, 3) uint8``; frame_of_face and warps (from :func:`alignment`) per face. ``arcface``:
    one bilinear OpenCV warp (:func:`stages.geometry.warp_crops`), edge pixels repeated outside the frame.
    ``ghost``: GHOST's two OpenCV steps, a warp to 224 (black outside the frame) and a bilinear resize,
    pixel for pixel what GHOST feeds its generator.
    """
    size = int(align["crop_size"]) if size is None else int(size)
    if align["template"] == "ghost":
        return ghost_crops(frames, frame_of_face, warps, size)
    return warp_crops(frames, frame_of_face, warps, size)


def crop_photo_face(image: np.ndarray, points5: np.ndarray, align: dict) -> np.ndarray:
    """One face of a photo ``(H, W, 3) uint8`` cut as the align stage cuts a video's faces at
    ``align.crop_size`` (:func:`alignment`): ``(S, S, 3) uint8``, e.g. a learned backend's source crop."""
    _, warp = alignment(points5, align)
    return crop_faces(image[None], [0], [warp], align)[0]


class AlignStage:
    """Sets ``affine`` (frame → crop, ``(2, 3) float32``) and ``crop`` (``(S, S, 3) uint8`` RGB) on
    selected faces; the cut per ``align.template`` (:func:`alignment`), S = ``align.crop_size`` or, for a
    face small in the frame, the side :func:`face_crop_size` gives (the same cut, scaled)."""

    def __init__(self, cfg: dict) -> None:
        self.align = cfg["align"]

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        full = int(self.align["crop_size"])
        by_side: dict[int, tuple[list[int], list[np.ndarray], list]] = {}
        for i, faces in enumerate(batch.faces):
            for face in faces:
                if face.selected:
                    face.affine, warp = alignment(face.points5, self.align)
                    side = face_crop_size(face.affine, self.align)
                    if side != full:  # the template scales with the side: so does the fitted similarity
                        face.affine = (face.affine * np.float32(side / full)).astype(np.float32)
                        warp = face.affine
                    owners, warps, records = by_side.setdefault(side, ([], [], []))
                    owners.append(i)
                    warps.append(warp)
                    records.append(face)
        for side, (owners, warps, records) in by_side.items():
            for face, crop in zip(records, crop_faces(batch.frames, owners, warps, self.align, side)):
                face.crop = crop
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
