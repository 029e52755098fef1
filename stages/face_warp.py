"""The classic swap's landmark warp: piecewise-affine grid, the source's face shape, head-turn weights.

Control points, Delaunay triangles, the piecewise-affine sampling grid, the source's face shape on the
target, and how far a face is turned (with where a turned source's far half is taken from its near half,
mirrored).

No learned weights. Conventions: landmarks ``(..., 68, 2)`` in crop pixels (x, y), dlib's 68-point order;
grids ``(F, S, S, 2) float32`` source pixel (x, y) of each destination pixel. Every batched step is
element-wise or per face, so no face's result depends on the others in its batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay

from stages.colour_match import gauss
from stages.geometry import estimate_similarity
from stages.mask_geometry import hull_points, lifted_brows, smooth_ramp
from stages.occluders import LEFT_EYE, RIGHT_EYE

RING_PUSH = 1.3  # outer warp ring: hull points pushed out from the face centre by this factor
EDGE_POINTS = 5  # control points per crop edge (corners included)
EDGE_TOL = 1e-4  # barycentric slack for pixels on a triangle edge
MIN_AREA = 1e-2  # target triangles with less (px^2) or folded over are skipped

# iBUG 68 point of the face's other half: jaw, brows, nose bridge (itself), nostrils, eyes, mouth
# fmt: off
MIRROR_68 = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)
# fmt: on


def control_points(lm: np.ndarray, size: int) -> np.ndarray:
    """Warp control points ``(..., K, 2) float64`` in crop pixels from ``(..., 68, 2)`` landmarks.

    68 landmarks, the lifted brows, the hull pushed outward from the nose (a ring that may leave the crop)
    and fixed points just outside the crop border, so the warp is the identity at the border and smooth
    out to the mask edge.
    """
    lm = np.asarray(lm, dtype=np.float64)
    hull = hull_points(lm)
    centre = lm[..., 27:36, :].mean(-2, keepdims=True)
    ring = centre + RING_PUSH * (hull - centre)
    t = np.linspace(-1.0, size, EDGE_POINTS)
    lo, hi = np.full_like(t, -1.0), np.full_like(t, float(size))
    mid, lo_m, hi_m = t[1:-1], lo[1:-1], hi[1:-1]
    border = np.concatenate(
        [np.stack([t, lo], 1), np.stack([t, hi], 1), np.stack([lo_m, mid], 1), np.stack([hi_m, mid], 1)]
    )
    border = np.broadcast_to(border, lm.shape[:-2] + border.shape)
    return np.concatenate([lm, lifted_brows(lm), ring, border], axis=-2)


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles ``(T, 3) int64`` over ``(K, 2)`` points (fixed qhull options: deterministic)."""
    tri = Delaunay(np.asarray(points, dtype=np.float64), qhull_options="Qbb Qc Qz Q12")
    return np.ascontiguousarray(tri.simplices, dtype=np.int64)


def _triangle_maps(src: np.ndarray, dst: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per (face, triangle) affine maps, float64.

    src ``(K, 2)``, dst ``(F, K, 2)``, tri ``(T, 3)``. Returns ``bary (F, T, 2, 3)`` (the barycentric
    coordinates u, v of a dst pixel as ``c0*x + c1*y + c2``), ``warp (F, T, 2, 3)`` dst → src pixel
    and ``valid (F, T)`` (dst triangle not degenerate and not folded over relative to src).
    """
    s = src[tri]  # (T, 3, 2)
    d = dst[:, tri]  # (F, T, 3, 2)
    a = d[..., 0, :]
    e1, e2 = d[..., 1, :] - a, d[..., 2, :] - a
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]  # twice the signed area
    s1, s2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    sdet = s1[:, 0] * s2[:, 1] - s1[:, 1] * s2[:, 0]
    valid = det * np.sign(sdet)[None] > 2.0 * MIN_AREA
    safe = np.where(valid, det, 1.0)
    # [u, v] = inv([e1 e2]) (p - a)
    i00, i01 = e2[..., 1] / safe, -e2[..., 0] / safe
    i10, i11 = -e1[..., 1] / safe, e1[..., 0] / safe
    cu = np.stack([i00, i01, -(i00 * a[..., 0] + i01 * a[..., 1])], -1)  # (F, T, 3)
    cv = np.stack([i10, i11, -(i10 * a[..., 0] + i11 * a[..., 1])], -1)
    bary = np.stack([cu, cv], -2)
    # src = s0 + u (s1 - s0) + v (s2 - s0)
    warp = s1[None, :, :, None] * cu[..., None, :] + s2[None, :, :, None] * cv[..., None, :]
    warp[..., 2] += s[None, :, 0, :]
    bary = np.where(valid[..., None, None], bary, 0.0)
    warp = np.where(valid[..., None, None], warp, 0.0)
    return bary, warp, valid


def piecewise_affine_grid(
    src: np.ndarray, dst: np.ndarray, tri: np.ndarray, size: int, src_size: int | None = None
) -> torch.Tensor:
    """Source pixel coordinates of every destination pixel, ``(F, size, size, 2) float32`` (x, y).

    src: ``(K, 2)`` control points in the source image, a ``src_size`` square (default ``size``; a face cut
    smaller than the source photo's crop samples that crop directly). dst: ``(F, K, 2)`` the same points per
    destination. tri: ``(T, 3)`` triangles over the points. Each destination pixel takes the affine map of the
    valid triangle it lies in; where folded-over triangles (skipped) make valid ones overlap, the one it is
    deepest inside. Pixels no valid triangle covers keep the identity (scaled by ``src_size / size``); source
    coordinates are clamped to ``[-1, src_size]``. Rasterisation is one pass per
    triangle over the union of its boxes in the batch, element-wise only, so every face's result is
    independent of the other faces in the batch.
    """
    dst = np.asarray(dst, dtype=np.float64)
    src = np.asarray(src, dtype=np.float64)
    n = len(dst)
    bary, warp, valid = _triangle_maps(src, dst, tri)
    cw = np.array([0.0, 0.0, 1.0]) - bary[..., 0, :] - bary[..., 1, :]
    coeffs = np.concatenate([bary, cw[..., None, :]], -2)  # (F, T, 3, 3): u, v, w = c0*x + c1*y + c2
    coeffs[~valid] = np.array([0.0, 0.0, -1.0])  # invalid triangles: u = v = w = -1, never accepted
    b = torch.from_numpy(coeffs.astype(np.float32))
    pts = dst[:, tri]  # (F, T, 3, 2)
    lo = np.clip(np.floor(pts.min(2)) - 1, 0, size - 1).astype(np.int64)  # (F, T, 2)
    hi = np.clip(np.ceil(pts.max(2)) + 1, 0, size - 1).astype(np.int64)
    coords = torch.arange(size, dtype=torch.float32)
    # a pixel joins a triangle when all its barycentric coordinates are >= -EDGE_TOL
    best = torch.full((n, size, size), -EDGE_TOL)
    label = torch.full((n, size, size), len(tri), dtype=torch.int64)
    for t in range(len(tri)):
        faces = np.flatnonzero(valid[:, t])
        if len(faces) == 0:
            continue
        x0, y0 = lo[faces, t].min(0)
        x1, y1 = hi[faces, t].max(0)
        bt = b[:, t]  # (F, 3, 3)
        along_x = bt[:, :, 0:1] * coords[x0 : x1 + 1] + bt[:, :, 2:3]  # (F, 3, w)
        along_y = bt[:, :, 1:2] * coords[y0 : y1 + 1]  # (F, 3, h)
        score = (along_x[:, :, None, :] + along_y[:, :, :, None]).amin(1)  # (F, h, w)
        view_best = best[:, y0 : y1 + 1, x0 : x1 + 1]
        better = score > view_best
        view_best.clamp_(min=score)
        label[:, y0 : y1 + 1, x0 : x1 + 1].masked_fill_(better, t)
    src_size = size if src_size is None else int(src_size)
    r = src_size / size
    identity = np.broadcast_to(np.array([[r, 0.0, 0.0], [0.0, r, 0.0]]), (n, 1, 2, 3))
    coef = torch.from_numpy(np.concatenate([warp, identity], 1).astype(np.float32)).reshape(n, -1, 6)
    c = torch.gather(coef, 1, label.reshape(n, -1, 1).expand(-1, -1, 6))  # (F, S*S, 6)
    gx = coords.repeat(size)[None]  # x of pixel i*size + j is j
    gy = coords.repeat_interleave(size)[None]
    sx = ((c[..., 0] * gx + c[..., 1] * gy) + c[..., 2]).clamp_(-1.0, float(src_size))
    sy = ((c[..., 3] * gx + c[..., 4] * gy) + c[..., 5]).clamp_(-1.0, float(src_size))
    return torch.stack([sx, sy], -1).reshape(n, size, size, 2)


def sample_pixels(image: torch.Tensor, grid_px: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling at pixel coordinates (align_corners=True convention, border padding).

    image: ``(F, C, H, W)`` or ``(1, C, H, W)`` (shared by all). grid_px: ``(F, h, w, 2)`` x, y in pixels.
    Returns ``(F, C, h, w)``.
    """
    h, w = image.shape[-2:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=grid_px.dtype)
    grid = grid_px * scale - 1.0
    if image.shape[0] != grid.shape[0]:
        image = image.expand(grid.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


# ----------------------------------------------------------------------------------------------------------
# the source's face shape on the target

NOSE = np.arange(27, 31)  # bridge and tip; the nostrils (31-35) stay over the target's mouth
SHAPE_ANCHORS = np.r_[0:17, 27:36, 36, 39, 42, 45]  # jaw, nose, eye corners: the source is fitted here
# feature groups moved and widened as units: (points, the two points giving centre and width)
SHAPE_GROUPS = (
    (np.arange(36, 42), (36, 39)),  # eye, image left
    (np.arange(42, 48), (42, 45)),  # eye, image right
    (np.arange(17, 22), (17, 21)),  # brow, image left
    (np.arange(22, 27), (22, 26)),  # brow, image right
)
SHAPE_SCALE_LIMITS = (0.75, 1.33)  # width change of a feature group


def source_shape_landmarks(target: np.ndarray, source: np.ndarray, strength: float) -> np.ndarray:
    """Target landmarks ``(F, 68, 2)`` moved toward the source face's proportions, float64.

    source ``(68, 2)`` is fitted onto each target face by a similarity on the jaw, nose and eye corners
    (many points: a steady fit from frame to frame); then, by ``strength`` in [0, 1]: the nose's bridge
    and tip take the source's points, and each eye and brow moves its centre toward the source's and takes
    the source's width along the eye axis, keeping the target's own shape across it (how open the eyes
    are, the arch of the brows: the target's expression). The nostrils and the mouth stay the target's:
    the mouth frames the target's own inner mouth, which the swap keeps, and its opening is expression
    (moving or widening the mouth, or moving the nostrils, moved dlib's estimate of the mouth's opening by
    up to 0.1 IOD on the quality grid). The jaw line (0-16) stays the target's: the silhouette, and what
    lies behind it, are not changed. Where the eyes sit, how far apart, how long the nose: these carry the
    source's identity beyond its skin texture (without them, a swap that no longer pasted the source's
    hair or glasses was often no longer recognised).
    """
    tgt = np.asarray(target, dtype=np.float64)
    out = tgt.copy()
    if strength <= 0:
        return out
    src = np.asarray(source, dtype=np.float64)
    for f in range(len(tgt)):
        p = tgt[f]
        m = estimate_similarity(src[SHAPE_ANCHORS], p[SHAPE_ANCHORS]).astype(np.float64)
        q = src @ m[:, :2].T + m[:, 2]
        axis = p[42:48].mean(0) - p[36:42].mean(0)
        axis = axis / max(np.linalg.norm(axis), 1e-6)
        normal = np.array([-axis[1], axis[0]])
        out[f, NOSE] = p[NOSE] + strength * (q[NOSE] - p[NOSE])
        for idx, (a, b) in SHAPE_GROUPS:
            cp, cq = (p[a] + p[b]) / 2, (q[a] + q[b]) / 2
            wp, wq = abs((p[b] - p[a]) @ axis), abs((q[b] - q[a]) @ axis)
            scale = 1.0 + strength * (wq / max(wp, 1e-6) - 1.0)
            scale = float(np.clip(scale, *SHAPE_SCALE_LIMITS))
            centre = cp + strength * (cq - cp)
            rel = p[idx] - cp
            out[f, idx] = centre + np.outer(rel @ axis * scale, axis) + np.outer(rel @ normal, normal)
    return out


def smooth_shape(target: np.ndarray, shaped: np.ndarray, smooth) -> np.ndarray:
    """``shaped`` ``(68, 2)`` with its offsets from ``target`` ``(68, 2)`` passed through ``smooth``.

    The offsets are taken in the face's own frame (along and across the eye axis, in eye distances), so a
    face that moves, turns in the image plane or changes size keeps them; ``smooth`` maps ``(68, 2)`` offsets
    to ``(68, 2)`` offsets (a filter along the track). Returns float64 crop pixels.
    """
    p = np.asarray(target, dtype=np.float64)
    axis = p[RIGHT_EYE].mean(0) - p[LEFT_EYE].mean(0)
    iod = max(float(np.linalg.norm(axis)), 1e-6)
    axis = axis / iod
    frame = np.array([axis, [-axis[1], axis[0]]])  # rows: along the eyes, across them
    offsets = (np.asarray(shaped, dtype=np.float64) - p) @ frame.T / iod
    return p + (np.asarray(smooth(offsets), dtype=np.float64) * iod) @ frame


# ----------------------------------------------------------------------------------------------------------
# how far a face is turned; a turned source's far half


def head_turn(points5: np.ndarray) -> float:
    """How far a face is turned, from its ``(5, 2)`` points (eyes image-left and image-right, nose tip, mouth
    corners; any unit): the nose tip's distance from the eyes' midpoint along the line through the eyes, in
    eye distances. 0 frontal, about ``0.4 tan(yaw)`` turned (the nose tip stands about 0.4 eye distances in
    front of the eyes), past 0.5 when the nose passes the far eye. Rotation and scale do not change it.
    """
    return abs(signed_turn(points5))


def signed_turn(points5: np.ndarray) -> float:
    """:func:`head_turn` with its sign: positive when the nose tip lies toward the image-right eye (the face
    turned so that its image-right half is the far, foreshortened one), negative toward the image-left eye;
    ``inf`` when both eyes are one point."""
    p = np.asarray(points5, dtype=np.float64)
    axis = p[1] - p[0]
    span = float(axis @ axis)
    if span < 1e-12:
        return float("inf")  # both eyes on one point: a profile
    return float((p[2] - 0.5 * (p[0] + p[1])) @ axis) / span


MIDLINE = np.array([27, 28, 29, 30, 33, 51, 62, 66, 57, 8])  # nose bridge and tip, lips' middles, chin
MIRROR_BAND = 0.3  # eye distances: width of the band over the nose's ridge where a mirrored far half fades in
MIRROR_STRETCH = (1.3, 2.0)  # the far half is mirrored where the warp stretches it this much over its median
MIRROR_SOFTEN = 0.03  # share of the crop side: the mirrored share is blurred by this


def mirror_weight(grid: torch.Tensor, masks: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Where a turned source's far half is taken from its near half: ``(F, S, S) float32`` in [0, 1].

    grid: ``(F, S, S, 2)`` source pixel of each target pixel (:func:`piecewise_affine_grid`); masks: the
    target faces ``(F, S, S)``; far: their far halves (:func:`far_half_weight`). The warp's local stretch
    (target area per source area, from the grid's finite differences) over its median on the face: a turned
    photo's far cheek, the nose's far side and what the nose hides are stretched two to five times, pulled
    into streaks; its far eye and mouth far less. The share ramps over :data:`MIRROR_STRETCH` there, on the
    far half only, blurred by :data:`MIRROR_SOFTEN` of the crop so the halves' textures meet softly.
    """
    jx = torch.gradient(grid, dim=2)[0]
    jy = torch.gradient(grid, dim=1)[0]
    area = (jx[..., 0] * jy[..., 1] - jx[..., 1] * jy[..., 0]).clamp(min=1e-3)
    stretch = 1.0 / area
    out = []
    sigma = MIRROR_SOFTEN * grid.shape[1]
    for f in range(len(grid)):
        on_face = masks[f] > 0.5
        median = stretch[f][on_face].median() if bool(on_face.any()) else stretch[f].median()
        rel = stretch[f] / median.clamp(min=1e-6)
        lo, hi = MIRROR_STRETCH
        share = smooth_ramp((rel - lo) / (hi - lo)) * far[f]
        out.append(torch.from_numpy(gauss(share.float().numpy(), sigma)))
    return torch.stack(out).clamp(0.0, 1.0)


def far_half_weight(lm: np.ndarray, size: int, far_sign: float, band: float) -> torch.Tensor:
    """Where each ``(F, 68, 2)`` face's far half lies in its crop: ``(F, S, S) float32`` in [0, 1].

    The face's midline is the line fitted (least squares) through :data:`MIDLINE`; a pixel's signed distance
    from it, along the eyes' line and in eye distances, is positive on the image-right half. The weight
    ramps (C1 smoothstep) from 0 at ``-band / 2`` to 1 at ``+band / 2`` of that distance taken toward the far
    half (``far_sign`` +1: image-right, -1: image-left), so the halves meet in a band over the nose's ridge.
    """
    lm = np.asarray(lm, dtype=np.float64)
    coords = torch.arange(size, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    out = []
    for p in lm:
        axis = p[RIGHT_EYE].mean(0) - p[LEFT_EYE].mean(0)
        iod = max(float(np.linalg.norm(axis)), 1e-6)
        axis = axis / iod
        pts = p[MIDLINE]
        centre = pts.mean(0)
        _, _, vt = np.linalg.svd(pts - centre)
        normal = np.array([-vt[0, 1], vt[0, 0]])  # across the fitted line ...
        if normal @ axis < 0:
            normal = -normal  # ... pointing image-right
        dist = ((gx - centre[0]) * normal[0] + (gy - centre[1]) * normal[1]) / iod
        out.append(smooth_ramp((far_sign * dist + band / 2.0) / max(band, 1e-6)))
    return torch.stack(out).float()


def turn_weight(points5: np.ndarray, fade: tuple[float, float]) -> float:
    """Share of the swap pasted on a face turned by :func:`head_turn`: 1 up to ``fade[0]``, 0 from
    ``fade[1]``, a smoothstep between (the 5 points are smoothed along the track, so a turning head fades
    over frames instead of popping)."""
    x = (head_turn(points5) - fade[0]) / (fade[1] - fade[0])
    return 1.0 - float(smooth_ramp(torch.tensor(x, dtype=torch.float64)))
