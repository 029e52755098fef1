"""Small, pure, batched geometry helpers (kornia style).

Affine matrices are ``(2, 3)`` and map source pixel coordinates to destination pixel coordinates.
"""

from __future__ import annotations

import kornia
import numpy as np
import torch

# ArcFace 5-point template for a 112x112 crop (eyes, nose tip, mouth corners), normalised to [0, 1].
ARCFACE_TEMPLATE = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
        dtype=np.float32,
    )
    / 112.0
)


def crop_template(crop_size: int, face_scale: float, centre_y: float) -> np.ndarray:
    """Five template points ``(5, 2) float32`` in pixels of a ``crop_size`` square crop.

    The ArcFace template is shrunk by ``face_scale`` around its centre and placed at
    ``(0.5, centre_y) * crop_size``, leaving a margin for brow, jaw and cheeks.
    """
    pts = (ARCFACE_TEMPLATE - 0.5) * face_scale + np.array([0.5, centre_y], dtype=np.float32)
    return (pts * crop_size).astype(np.float32)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama, no reflection) mapping ``src`` onto ``dst``.

    src, dst: ``(K, 2)`` points. Returns ``(2, 3) float32``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = float((sig * d).sum() / var_s) if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m.astype(np.float32)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine matrix, ``(2, 3) float32``."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2].astype(np.float32)


def transform_points(pts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(K, 2)`` points; returns ``(K, 2) float32``."""
    pts = np.asarray(pts, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def footprint_box(
    m_inv: np.ndarray,
    size: int,
    height: int,
    width: int,
    rect: tuple[float, float, float, float] | None = None,
) -> tuple[int, int, int, int] | None:
    """Integer box ``(x1, y1, x2, y2)`` (exclusive end) of the frame covered by a ``size`` square crop.

    m_inv maps crop pixels to frame pixels. rect: only this ``(x0, y0, x1, y1)`` part of the crop
    (default: all of it). A pixel of margin covers the bilinear footprint. Clipped to the frame; None when
    it lies outside.
    """
    x0, y0, x1, y1 = rect if rect is not None else (0, 0, size, size)
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float32)
    pts = transform_points(corners, m_inv)
    x1 = max(0, int(np.floor(pts[:, 0].min())) - 1)
    y1 = max(0, int(np.floor(pts[:, 1].min())) - 1)
    x2 = min(width, int(np.ceil(pts[:, 0].max())) + 2)
    y2 = min(height, int(np.ceil(pts[:, 1].max())) + 2)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def shift_affine(m: np.ndarray, dx: float, dy: float, *, in_source: bool) -> np.ndarray:
    """Re-express ``m`` after moving the origin by ``(dx, dy)``.

    in_source=True: the source image was cropped at (dx, dy) (source coords shrink by dx, dy).
    in_source=False: the destination image is a window starting at (dx, dy).
    """
    m = np.asarray(m, dtype=np.float64).copy()
    if in_source:
        m[:, 2] += m[:, :2] @ np.array([dx, dy])
    else:
        m[:, 2] -= np.array([dx, dy])
    return m.astype(np.float32)


def tensor_of(array: np.ndarray) -> torch.Tensor:
    """A torch view of ``array``; copied only when it is read-only (Ray object store) or not contiguous."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, C) uint8`` → ``(N, C, H, W) float32`` in [0, 1]."""
    t = tensor_of(images)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W) float32`` in [0, 1] → ``(N, H, W, C) uint8`` (rounded, clipped)."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def warp_crops(
    frames: np.ndarray, frame_of_face: list[int], matrices: list[np.ndarray], size: int
) -> np.ndarray:
    """Cut aligned crops out of frames, warping only the region each crop covers.

    frames: ``(N, H, W, 3) uint8`` RGB. frame_of_face: frame index of each face.
    matrices: per face ``(2, 3)`` frame → crop. Returns ``(F, size, size, 3) uint8`` RGB
    (outside the frame is filled by border replication).
    """
    if not matrices:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    h, w = frames.shape[1:3]
    out = []
    for fi, m in zip(frame_of_face, matrices):
        box = footprint_box(invert_affine(m), size, h, w)
        if box is None:
            x1, y1, x2, y2 = 0, 0, w, h
        else:
            x1, y1, x2, y2 = box
        region = to_tensor(frames[fi : fi + 1, y1:y2, x1:x2])
        mt = torch.from_numpy(shift_affine(m, x1, y1, in_source=True))[None]
        out.append(
            kornia.geometry.transform.warp_affine(
                region, mt, (size, size), mode="bilinear", padding_mode="border", align_corners=True
            )
        )
    return to_uint8(torch.cat(out))


def points5_from_68(lm68: np.ndarray) -> np.ndarray:
    """Five points ``(5, 2) float32`` from iBUG 68 landmarks: eye centres, nose tip, mouth corners."""
    lm68 = np.asarray(lm68, dtype=np.float32)
    return np.stack([lm68[36:42].mean(0), lm68[42:48].mean(0), lm68[30], lm68[48], lm68[54]]).astype(
        np.float32
    )
