"""Blend/paste stage: warp each swapped crop and its soft mask back into the frame and alpha-blend.

Only the frame box the mask covers is warped (OpenCV, :func:`stages.geometry.warp_affine_image`), and only
pixels whose warped mask is above zero are written: everything else keeps its exact original value.
"""

from __future__ import annotations

import numpy as np
import torch

from stages.geometry import footprint_box, invert_affine, shift_affine, tensor_of, warp_affine_image
from stages.types import FaceRecord, FrameBatch


def mask_footprint(
    mask: np.ndarray, m_inv: np.ndarray, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """Integer frame box ``(x1, y1, x2, y2)`` (exclusive end) that the nonzero part of ``mask`` lands on.

    mask: ``(S, S)`` in crop pixels. m_inv: ``(2, 3)`` crop → frame. None when the mask is empty or the box
    lies outside the frame. One pixel of margin covers the bilinear footprint.
    """
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        return None
    rect = (xs.min() - 1, ys.min() - 1, xs.max() + 1, ys.max() + 1)
    return footprint_box(m_inv, mask.shape[0], height, width, rect=rect)


def blend_face(
    frame: np.ndarray, face: FaceRecord
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
    """Blend ``face.swapped`` over its footprint in ``frame`` (which is only read).

    frame: ``(H, W, 3) uint8`` RGB. face: needs ``affine`` (frame → crop), ``swapped`` ``(S, S, 3) uint8``
    RGB and ``mask`` ``(S, S) float32`` in [0, 1]. Returns the box ``(x1, y1, x2, y2)``, the blended patch
    ``(y2-y1, x2-x1, 3) uint8`` (``frame * (1 - a) + warped * a``, rounded) and where to write it
    ``(y2-y1, x2-x1) bool`` (``a > 0``), or None when the mask covers no frame pixel.
    """
    h, w = frame.shape[:2]
    m_inv = invert_affine(face.affine)
    box = mask_footprint(face.mask, m_inv, h, w)
    if box is None:
        return None
    x1, y1, x2, y2 = box
    # crop → window of the frame starting at (x1, y1); same pixel convention as geometry.warp_crops
    mt = shift_affine(m_inv, x1, y1, in_source=False)
    rgba = np.dstack([face.swapped.astype(np.float32) / np.float32(255.0), np.asarray(face.mask, np.float32)])
    warped = torch.from_numpy(warp_affine_image(rgba, mt, (y2 - y1, x2 - x1), "zeros")).permute(2, 0, 1)
    alpha = warped[3].clamp_(0.0, 1.0)
    write = (alpha > 0).numpy()
    if not write.any():
        return None
    region = tensor_of(frame[y1:y2, x1:x2]).permute(2, 0, 1).float()
    out = region * (1.0 - alpha) + warped[:3].mul(255.0) * alpha
    patch = out.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return box, patch, write


class BlendStage:
    """Paste every face that has ``swapped`` and ``mask`` back into its frame, then free the crop arrays.

    Frames are copied (``batch.writable()``) only when something is actually pasted. After the stage every
    face's ``crop``, ``swapped`` and ``mask`` are None, so they are not shipped to the encoder.
    """

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        for fi, faces in enumerate(batch.faces):
            for face in faces:
                if face.swapped is not None and face.mask is not None and face.affine is not None:
                    done = blend_face(batch.frames[fi], face)
                    if done is not None:
                        (x1, y1, x2, y2), patch, write = done
                        batch.writable()
                        batch.frames[fi, y1:y2, x1:x2][write] = patch[write]
                        face.pasted = True
                face.crop = None
                face.swapped = None
                face.mask = None
        return batch

    def flush(self) -> list[FrameBatch]:
        return []
