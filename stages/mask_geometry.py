"""Mask geometry in the aligned crop: face outlines, signed distances, feathered paste masks, soft ramps.

The pasted face's outline from 68 landmarks, signed distances to convex hulls and to any polygon, the
feathered paste mask with its inner-mouth hole, and the smooth ramp every soft mask is made with. Shared by
the swap backends (``swap_classic`` with its ``source_face``, ``face_warp`` and ``colour_match``;
``swap_faceshifter``) and the occlusion mask stage (``mask``); it knows
nothing of stages.

Conventions: landmarks ``(..., 68, 2)`` in crop pixels (x, y), dlib's 68-point order; distances in
pixels, positive inside; masks ``(F, S, S) float32`` in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import ConvexHull, QhullError

from stages.occluders import BROWS

JAW = np.arange(0, 17)
INNER_LIP = np.arange(60, 68)
BROW_LIFT = 0.45  # brows are lifted by this share of the eye distance: the seam sits on the forehead
MOUTH_FEATHER = 0.006  # outward feather of the inner-mouth hole, fraction of the crop size


def lifted_brows(lm: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` landmarks → ``(..., 10, 2)`` brow points lifted along the face's up direction."""
    up = lm[..., 27, :] - lm[..., 8, :]
    up = up / np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-6)
    eye_dist = np.linalg.norm(lm[..., 36:42, :].mean(-2) - lm[..., 42:48, :].mean(-2), axis=-1)
    return lm[..., BROWS, :] + (BROW_LIFT * eye_dist)[..., None, None] * up[..., None, :]


def hull_points(lm: np.ndarray) -> np.ndarray:
    """Outline of the pasted face ``(..., 27, 2)``: jaw 0-16 then lifted brows 26..17 (float64)."""
    lm = np.asarray(lm, dtype=np.float64)
    return np.concatenate([lm[..., JAW, :], lifted_brows(lm)[..., ::-1, :]], axis=-2)


def _convex_halfplanes(polys: np.ndarray) -> np.ndarray:
    """Inward half-planes of each polygon's convex hull, ``(F, E, 3) float64`` rows ``(nx, ny, c)`` with
    ``nx*x + ny*y + c`` the distance inside that edge; padded with copies of the first edge."""
    planes = []
    for poly in polys:
        try:
            verts = poly[ConvexHull(poly).vertices]
        except QhullError:
            verts = poly[:0]
        rows = []
        if len(verts) >= 3:
            centre = verts.mean(0)
            for a, b in zip(verts, np.roll(verts, -1, 0)):
                e = b - a
                length = float(np.hypot(*e))
                if length < 1e-9:
                    continue
                n = np.array([-e[1], e[0]]) / length
                if n @ (centre - a) < 0:
                    n = -n
                rows.append([n[0], n[1], -(n @ a)])
        if not rows:
            rows = [[0.0, 0.0, -1e6]]  # empty polygon: everything outside
        planes.append(np.array(rows))
    width = max(len(p) for p in planes)
    return np.stack([np.concatenate([p, np.repeat(p[:1], width - len(p), 0)]) for p in planes])


def hull_distance(hulls: np.ndarray, size: int, step: int = 4) -> torch.Tensor:
    """Signed distance (px, positive inside) to the convex hull of each ``(P, 2)`` outline.

    hulls: ``(F, P, 2)`` in crop pixels. Exact inside the hull (the distance to a convex polygon is the least
    distance to its edge lines); evaluated on a grid every ``step`` px and bilinearly upsampled, which is
    exact wherever one edge is nearest. Returns ``(F, size, size) float32``.
    """
    planes = torch.from_numpy(_convex_halfplanes(np.asarray(hulls, dtype=np.float64)).astype(np.float32))
    g = (size - 1) // step + 1
    xs = torch.linspace(0.0, float(size - 1), g)
    d = None
    for e in range(planes.shape[1]):
        p = planes[:, e]
        de = (p[:, 0, None, None] * xs[None, None, :] + p[:, 1, None, None] * xs[None, :, None]) + p[
            :, 2, None, None
        ]
        d = de if d is None else torch.minimum(d, de)
    return F.interpolate(d[:, None], size=(size, size), mode="bilinear", align_corners=True)[:, 0]


def polygon_distance(polys: np.ndarray, size: int, pad: float) -> torch.Tensor:
    """Signed distance (px, positive inside) to possibly non-convex closed polygons ``(F, P, 2)``.

    Computed exactly at full resolution inside the union of the polygons' boxes grown by ``pad`` px;
    elsewhere ``-pad``. Returns ``(F, size, size) float32``.
    """
    polys = np.asarray(polys, dtype=np.float32)
    n = len(polys)
    out = torch.full((n, size, size), -float(pad))
    lo = np.clip(np.floor(polys.reshape(-1, 2).min(0) - pad), 0, size - 1).astype(int)
    hi = np.clip(np.ceil(polys.reshape(-1, 2).max(0) + pad), 0, size - 1).astype(int)
    xs = torch.arange(lo[0], hi[0] + 1, dtype=torch.float32)[None, None, :]
    ys = torch.arange(lo[1], hi[1] + 1, dtype=torch.float32)[None, :, None]
    p = torch.from_numpy(polys)
    dist2 = None
    inside = None
    for k in range(p.shape[1]):
        a, b = p[:, k], p[:, (k + 1) % p.shape[1]]
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        ex, ey = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
        len2 = ex * ex + ey * ey
        px, py = xs - ax, ys - ay
        t = ((px * ex + py * ey) / torch.clamp(len2, min=1e-12)).clamp(0.0, 1.0)
        dx, dy = px - t * ex, py - t * ey
        d2 = dx * dx + dy * dy
        dist2 = d2 if dist2 is None else torch.minimum(dist2, d2)
        # even-odd crossing test of a ray towards +x
        by = ay + ey
        crosses = (ay > ys) != (by > ys)
        xcross = ax + (ys - ay) * ex / torch.where(ey == 0, torch.ones_like(ey), ey)
        hit = crosses & (xs < xcross)
        inside = hit if inside is None else inside ^ hit
    d = torch.sqrt(dist2)
    out[:, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = torch.where(inside, d, -d).clamp(min=-float(pad))
    return out


def smooth_ramp(x: torch.Tensor) -> torch.Tensor:
    """0 for x <= 0, 1 for x >= 1, C1 smoothstep between."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def feather_profile(d: torch.Tensor, erode: float, sigma: float) -> torch.Tensor:
    """Soft mask ``(..., H, W)`` in [0, 1] from the signed distance ``d`` (px, positive inside) to the hull.

    The hull is eroded by ``erode`` px and blurred by a Gaussian of std ``sigma`` px whose kernel is truncated
    at radius ``min(2 sigma, erode)``: the profile a straight edge gets from that blur. The truncation keeps
    the mask exactly 0 on and outside the hull (a blur reaching outside the jaw line would paste the source's
    background and neck as a faint halo around the face). With the defaults (erode 7.7 px, sigma 12.8 px at
    S = 256) the ramp runs from the hull to 15 px inside it: the seam stays on skin and the face is covered
    almost out to its contour, which the identity of the result needs.
    """
    radius = max(min(2.0 * sigma, erode), 0.5)
    if sigma <= 0:
        return smooth_ramp((d - erode + radius) / (2.0 * radius))
    tail = 0.5 * math.erfc(radius / sigma / math.sqrt(2.0))
    ramp = (torch.special.ndtr((d - erode) / sigma) - tail) / (1.0 - 2.0 * tail)
    return ramp.clamp(0.0, 1.0)


def face_masks(
    lm_crop: np.ndarray, cfg: dict, keep_inner_mouth: bool | None = None, size: int | None = None
) -> torch.Tensor:
    """Paste masks ``(F, S, S) float32`` in [0, 1] from target landmarks ``(F, 68, 2)`` in crop pixels.

    keep_inner_mouth: cut out the inner-lip area (default: ``classic.keep_inner_mouth``). size: the crops'
    side S (default ``align.crop_size``); erosion and feather are shares of it.
    """
    size = int(cfg["align"]["crop_size"]) if size is None else int(size)
    erode = float(cfg["blend"]["erode"]) * size
    sigma = float(cfg["blend"]["feather"]) * size
    mask = feather_profile(hull_distance(hull_points(lm_crop), size), erode, sigma)
    if keep_inner_mouth is None:
        keep_inner_mouth = bool(cfg["classic"].get("keep_inner_mouth", True))
    if keep_inner_mouth:
        width = MOUTH_FEATHER * size
        d = polygon_distance(np.asarray(lm_crop)[:, INNER_LIP], size, pad=width + 2.0)
        hole = 1.0 - smooth_ramp(-d / width)
        mask = mask * (1.0 - hole)
    return torch.where(mask < 1e-3, torch.zeros_like(mask), mask)


FACE_REGION_EDGE = 0.02  # share of the crop side over which a face region mask goes from 0 to 1


def face_region_masks(lm_crop: np.ndarray, size: int) -> torch.Tensor:
    """The face region ``(F, 1, S, S) float32`` in [0, 1]: inside the 68 points' outline (jaw and lifted
    brows, :func:`hull_points`), a smooth edge :data:`FACE_REGION_EDGE` of the side wide centred on it.
    What splits a target between WSC-swap's two encoders (:mod:`models.wsc_net`)."""
    depth = hull_distance(hull_points(np.asarray(lm_crop, dtype=np.float64)), size)
    width = max(FACE_REGION_EDGE * size, 1.0)
    return smooth_ramp(depth / width + 0.5)[:, None].float()
