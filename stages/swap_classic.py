"""Classic face swap: piecewise-affine landmark warp of one source face, colour match, soft paste mask.

No learned weights. For every selected face of a batch (aligned crop + 68 landmarks set by the align stage)
the source face (its one-sided light evened out, :func:`even_light`) is warped onto the target's landmark
geometry (with the source's nose, eye and brow shape, smoothed along the track; where a turned photo's far
half would be stretched, its near half mirrored, :func:`mirror_weight`), colour-matched to the
target's skin in CIE Lab, given the target's shading and sharpness, and given a soft mask that covers the
face hull (jaw line and lifted brows), eroded and feathered, with a hole over the target's own open mouth.

Only the source's face is pasted (:mod:`stages.occluders`; ``classic.source_hair`` /
``classic.source_glasses``): its glasses frames are filled from the skin around them (they are thin, and
the eyes behind clear lenses are the source's); its hair, hat or fringe reaching into the hull and dark
lenses form an occluder map of the source crop, warped with its texture. Where the source is hidden the
paste mask is taken down, so the target's own skin shows there (it has the target's shading and texture;
inpainting a whole hidden forehead gave a smeared, flat patch), and the colour match measures the source on
its visible skin only.

Every result depends only on that face's own inputs: the batched steps are element-wise (their values do
not depend on which other faces share the batch) and every reduction runs per face, so the outputs are
bit-identical whatever the batch composition. Runs on the CPU (many small element-wise kernels; no network).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import kornia
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay

from models.runtime import check_shape
from stages.align import alignment, crop_faces
from stages.geometry import (
    estimate_similarity,
    points5_from_68,
    tensor_of,
    transform_points,
)
from stages.mask_geometry import (
    INNER_LIP,
    face_masks,
    hull_distance,
    hull_points,
    lifted_brows,
    polygon_distance,
    smooth_ramp,
)
from stages.occluders import BROWS, LEFT_EYE, RIGHT_EYE, _polygon, glasses_map, hair_map, inter_ocular, luma
from stages.scene import SceneCuts, TrackMemory
from stages.types import FrameBatch, swap_inputs

RING_PUSH = 1.3  # outer warp ring: hull points pushed out from the face centre by this factor
EDGE_POINTS = 5  # control points per crop edge (corners included)
EDGE_TOL = 1e-4  # barycentric slack for pixels on a triangle edge
MIN_AREA = 1e-2  # target triangles with less (px^2) or folded over are skipped
STD_RATIO = (0.5, 2.0)  # clamp of the per-channel std ratio in the colour transfer


@dataclass
class SourceFace:
    """The identity pasted onto every target face.

    crop: ``(S, S, 3) uint8`` RGB aligned source face (same template as the align stage).
    landmarks68: ``(68, 2) float32`` iBUG 68 landmarks in crop pixels.
    """

    crop: np.ndarray
    landmarks68: np.ndarray


OCCLUDER_SOFTEN = 0.01  # the source's occluder map is grown and blurred by this share of the crop side
BROW_COVER_PROBE = (0.05, 0.3)  # IOD above a brow's points: a strip that a fringe covering the brow fills
BROW_COVER_SHARE = 0.65  # ... at least this share (35 shared photos: covered 0.67-1.0, the others <= 0.63)
BROW_COVER_GROW = 0.08  # IOD: a covered brow's points (on the fringe's edge) go with the fringe, grown so
FRAME_FILL_RADIUS = 0.06  # IOD: neighbourhood the source's frame pixels are filled from
FRAME_ZONE_GROW = 0.04  # IOD: filled frames, grown by this (edges the fill missed), take the skin's a/b
EVEN_LIGHT_SIGMA = 0.03  # share of the crop side: the scale above which one-sided light is evened out

# iBUG 68 point of the face's other half: jaw, brows, nose bridge (itself), nostrils, eyes, mouth
MIRROR_68 = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


def brow_covered(hair: np.ndarray, lm: np.ndarray, brow: np.ndarray) -> bool:
    """Whether a fringe covers the brow ``brow`` (indices into the 68 points ``lm``, crop pixels): the hair
    map ``hair`` ``(S, S)`` fills at least ``BROW_COVER_SHARE`` of the strip from ``BROW_COVER_PROBE[0]``
    to ``BROW_COVER_PROBE[1]`` IOD above the brow's points. dlib then puts the brow's points on the
    fringe's lower edge, the real brow lying under the hair (John Lennon's photos); a patch of hair at the
    temple or a highlight taken for hair fills only part of the strip."""
    iod = inter_ocular(lm)
    near, far = (lm[brow] - [0.0, d * iod] for d in BROW_COVER_PROBE)
    strip = _polygon(hair.shape, np.concatenate([near, far[::-1]]))
    return bool(strip.any() and float((hair[strip] > 0.5).mean()) >= BROW_COVER_SHARE)


def source_layers(source: SourceFace, cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What of the source crop is pasted: its crop with glasses frames filled, its visibility, and where
    the frames were.

    Returns ``(S, S, 3) uint8`` RGB and two ``(S, S) float32`` maps in [0, 1]: visibility, and the filled
    frames grown by ``FRAME_ZONE_GROW`` IOD and softened (what the fill left of them takes the target skin's
    a and b, see :func:`lab_transfer`; never over the eyes and brows; all zero without glasses or with
    ``keep``). With ``classic.source_glasses=drop`` the frames are filled from the source's own skin around
    them (Telea inpainting over ``FRAME_FILL_RADIUS`` IOD): frames are thin, so the fill keeps the source's
    eyes and the skin between the rims, which carry its identity. The visibility is 1 where the crop shows
    the face and 0 on its hair, hat and fringe (``classic.source_hair=drop``) and on dark lenses that hide
    the eyes (nothing of the face behind them is left to fill from); there the target's own skin shows.
    With ``drop``, all of the crop beyond the source's own hull is hidden too (a target's paste hull can
    reach past it where the source's brows sit low: a cap's brim).
    Softened a little. The source's eyes and brows always show, except behind dark lenses: a fringe ending
    at the brows or side hair beside an eye would otherwise grow over them, and the target's eyes in the
    source's face read as the target. A brow a fringe covers (:func:`brow_covered`) goes with the fringe:
    its points lie on the fringe's dark edge, which pasted was a band across the target's forehead.
    """
    size = source.crop.shape[0]
    lm = np.asarray(source.landmarks68, dtype=np.float64)
    iod = inter_ocular(lm)
    depth = hull_distance(hull_points(lm[None]), size)[0].numpy()
    hair = hair_map(source.crop, lm, depth, photo=True)
    hidden = np.zeros((size, size), np.float32)  # hair and the like, never over the eyes and brows
    lenses = np.zeros((size, size), np.float32)  # dark lenses, over the eyes
    crop = source.crop
    zone = np.zeros((size, size), np.float32)
    if cfg["classic"]["source_hair"] == "drop":
        # and what lies beyond its own outline: where the source's brows sit lower than the target's, the
        # target's paste hull reaches past the source's, and a cap's brim and badge were pasted so
        hidden = np.maximum(hair, (depth < 0).astype(np.float32))
    if cfg["classic"]["source_glasses"] == "drop":
        frames, lenses, found = glasses_map(source.crop, lm, hair)
        if found:
            fill = ((frames > 0) & (np.maximum(hidden, lenses) < 0.5)).astype(np.uint8)
            radius = max(3.0, FRAME_FILL_RADIUS * iod)
            crop = cv2.inpaint(np.ascontiguousarray(source.crop), fill, radius, cv2.INPAINT_TELEA)
            k = 2 * int(round(FRAME_ZONE_GROW * iod)) + 1
            zone = cv2.dilate(fill, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
    # grown by sigma, then blurred: the soft edge lies around the occluder, which stays (almost) fully out
    sigma = OCCLUDER_SOFTEN * size
    k = 2 * int(math.ceil(sigma)) + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))

    def soft(m: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(cv2.dilate(m, disc), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)

    shape = (size, size)
    features = _polygon(shape, lm[LEFT_EYE]) | _polygon(shape, lm[RIGHT_EYE])
    # which brows a fringe covers is read on the colour-only map (what BROW_COVER_SHARE was measured on): a
    # knitted hat that only texture finds ends above the brows, with skin between (compreface_woman1_a)
    fringe = hair_map(source.crop, lm, depth) if cfg["classic"]["source_hair"] == "drop" else hidden
    for brow in (BROWS[:5], BROWS[5:]):
        if brow_covered(fringe, lm, brow):  # its points lie on the fringe's dark edge: it goes with it
            band = _polygon(shape, lm[brow], BROW_COVER_GROW * iod).astype(np.float32)
            hidden = np.maximum(hidden, band)
        else:
            features |= _polygon(shape, lm[brow])
    features = features.astype(np.float32)
    covered = np.maximum(soft(hidden) * (1.0 - np.minimum(soft(features), 1.0)), soft(lenses))
    zone = np.clip(soft(zone) * (1.0 - np.minimum(soft(features), 1.0)), 0.0, 1.0).astype(np.float32)
    visible = np.clip(1.0 - covered, 0.0, 1.0).astype(np.float32)
    strength = float(cfg["classic"]["even_source_light"])
    if strength > 0:
        crop = even_light(crop, lm, skin_weights(lm[None], size)[0] * visible, strength)
    return crop, visible, zone


def mirror_face(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The face reflected about its own midline: ``image (S, S, C) float32`` → ``(S, S, C) float32`` that
    shows, at each of the 68 points ``lm`` (crop pixels), what ``image`` shows at the point's counterpart on
    the face's other half (:data:`MIRROR_68`): the image flipped left-right, then warped piecewise-affinely
    so its points land on the originals (a flip alone would put a turned face's halves side by side)."""
    size = image.shape[0]
    flipped_lm = np.asarray(lm, dtype=np.float64).copy()
    flipped_lm[:, 0] = size - 1 - flipped_lm[:, 0]
    dst = control_points(lm, size)
    src = control_points(flipped_lm[MIRROR_68], size)
    grid = piecewise_affine_grid(src, dst[None], triangulate(dst), size)
    flipped = torch.from_numpy(np.ascontiguousarray(image[:, ::-1])).permute(2, 0, 1)[None]
    return sample_pixels(flipped, grid)[0].permute(1, 2, 0).numpy()


def even_light(crop: np.ndarray, lm: np.ndarray, skin: np.ndarray, strength: float) -> np.ndarray:
    """Even out the source photo's one-sided light: ``crop (S, S, 3) uint8`` RGB → the same, where the
    shading that differs between the face's two halves is taken away (``strength`` 1: all of it).

    lm: ``(68, 2)`` crop pixels; skin: ``(S, S)`` weights of the bare visible skin. A face's albedo is
    nearly symmetric and its features are, so what differs between a point and its mirror counterpart
    (:func:`mirror_face`) at scales above ``EVEN_LIGHT_SIGMA`` of the crop is light: in CIE Lab, each pixel
    moves by ``strength / 2`` of the difference between the skin-weighted local means (:func:`_masked_blur`)
    of the crop and of its mirror, measured where both halves show skin. Both halves meet at their mean,
    and the light the target's shading replaces (:func:`shading_transfer`, above ``classic.shading_sigma``)
    no longer leaves the source's half-shadow at the scale of the eye sockets and the nose's side
    (john_lennon_b, eric_clapton_a: lit from one side, pasted as a dark half-face). Only on the skin and
    the features it surrounds, fading out beyond it; the image elsewhere is unchanged.
    """
    size = crop.shape[0]
    rgb = crop.astype(np.float32) / 255.0
    both = np.concatenate([rgb, skin[..., None].astype(np.float32)], -1)
    mirrored = mirror_face(both, lm)
    weight = (skin * mirrored[..., 3]).astype(np.float32)
    if float(weight.sum()) < 1.0:
        return crop
    sigma = EVEN_LIGHT_SIGMA * size
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    lab_m = cv2.cvtColor(np.ascontiguousarray(mirrored[..., :3]), cv2.COLOR_RGB2Lab)
    step = _masked_blur(lab, weight, sigma) - _masked_blur(lab_m, weight, sigma)
    # on the skin and what it surrounds (eyes, brows, lips); fading out within about sigma of its edge
    near = np.clip(2.0 * _gauss(skin.astype(np.float32), sigma), 0.0, 1.0)
    out = lab - (0.5 * strength) * step * near[..., None]
    out = np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)
    return (out * 255.0).round().astype(np.uint8)


def make_source_face(
    image: np.ndarray, points5: np.ndarray, landmarks68: np.ndarray, cfg: dict
) -> SourceFace:
    """Align a source photo's face the way the align stage aligns target faces.

    image: ``(H, W, 3) uint8`` RGB. points5: ``(5, 2)`` detector points (or ``points5_from_68``).
    landmarks68: ``(68, 2)`` in image pixels. Returns the aligned crop and landmarks in crop pixels.
    """
    image = np.asarray(image)
    check_shape(image, ("H", "W", 3), "source image", np.uint8, "uint8 RGB")
    points5 = np.asarray(points5, dtype=np.float32)
    landmarks68 = np.asarray(landmarks68, dtype=np.float32)
    check_shape(points5, (5, 2), "source face points5")
    check_shape(landmarks68, (68, 2), "source face landmarks68")
    m, warp = alignment(points5, cfg["align"])
    crop = crop_faces(image[None], [0], [warp], cfg["align"])[0]
    return SourceFace(crop=crop, landmarks68=transform_points(landmarks68, m))


# ----------------------------------------------------------------------------------------------------------
# control points, triangulation, piecewise-affine warp


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


def piecewise_affine_grid(src: np.ndarray, dst: np.ndarray, tri: np.ndarray, size: int) -> torch.Tensor:
    """Source pixel coordinates of every destination pixel, ``(F, size, size, 2) float32`` (x, y).

    src: ``(K, 2)`` control points in the source image. dst: ``(F, K, 2)`` the same points per destination.
    tri: ``(T, 3)`` triangles over the points. Each destination pixel takes the affine map of the valid
    triangle it lies in; where folded-over triangles (skipped) make valid ones overlap, the one it is
    deepest inside. Pixels no valid triangle covers keep the identity. Rasterisation is one pass per
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
    identity = np.broadcast_to(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (n, 1, 2, 3))
    coef = torch.from_numpy(np.concatenate([warp, identity], 1).astype(np.float32)).reshape(n, -1, 6)
    c = torch.gather(coef, 1, label.reshape(n, -1, 1).expand(-1, -1, 6))  # (F, S*S, 6)
    gx = coords.repeat(size)[None]  # x of pixel i*size + j is j
    gy = coords.repeat_interleave(size)[None]
    sx = ((c[..., 0] * gx + c[..., 1] * gy) + c[..., 2]).clamp_(-1.0, float(size))
    sy = ((c[..., 3] * gx + c[..., 4] * gy) + c[..., 5]).clamp_(-1.0, float(size))
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
# colour


def lab_stats(
    image: torch.Tensor, weight: torch.Tensor, stride: int = 4, detail_sigma: float | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Weighted per-channel CIE-Lab mean and std ``(3,), (3,)`` of ``image (3, H, W)`` RGB in [0, 1] inside
    ``weight (H, W) >= 0``, over every ``stride``-th pixel; None when the weights sum to less than 1.

    detail_sigma (px): the lightness std is taken of the detail finer than this scale only (lightness less
    its weighted local mean, :func:`_masked_blur`): with the shading transfer on, that is all of the
    source's lightness that is pasted, and the light across the face (a lit cheek, a shadowed half) would
    otherwise count as contrast. Mean and a/b std are whole-band."""
    w = weight[::stride, ::stride].reshape(1, -1)
    total = w.sum()
    if float(total) < 1.0:
        return None
    grid = kornia.color.rgb_to_lab(image[None, :, ::stride, ::stride].contiguous())[0]
    lab = grid.reshape(3, -1)
    mu = (lab * w).sum(1) / total
    sd = torch.sqrt(((lab - mu[:, None]) ** 2 * w).sum(1) / total)
    if detail_sigma is not None and detail_sigma > 0:
        # the lightness the shading transfer keeps: less its weighted local mean at that scale (smooth at
        # many pixels, so taken on the same sparse grid)
        lightness = grid[0].numpy()[..., None]
        weights = np.ascontiguousarray(weight[::stride, ::stride].numpy(), dtype=np.float32)
        detail = lightness[..., 0] - _masked_blur(lightness, weights, detail_sigma / stride)[..., 0]
        detail = torch.from_numpy(np.ascontiguousarray(detail)).reshape(1, -1)
        sd = torch.cat([torch.sqrt((detail**2 * w).sum(1) / total), sd[1:]])
    return mu, sd


def lab_transfer(
    src: torch.Tensor,
    dst: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 4,
    target_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    src_weight: torch.Tensor | None = None,
    skin_tone: torch.Tensor | None = None,
    detail_sigma: float | None = None,
) -> torch.Tensor:
    """Move ``src``'s per-channel Lab mean and std inside ``weight`` to those of ``dst`` (Reinhard transfer),
    with the a/b shift taken in proportion to each pixel's lightness against the skin's (all of it at the
    skin's lightness and above).

    src, dst: ``(3, H, W) float32`` RGB in [0, 1]. weight: ``(H, W)`` >= 0. The statistics use every
    ``stride``-th pixel. target_stats: use these ``(mean, std)`` instead of ``dst``'s own (temporally
    smoothed ones). src_weight: weights of ``src``'s statistics (its visible skin) when not ``weight``.
    skin_tone: ``(H, W)`` in [0, 1], where a and b become the target skin's mean (what the fill left of the
    source's glasses frames, and what it filled them with: not the face's colour, and a dark pixel given the
    whole shift took its complement, green at john_lennon_a's bridge and rims on may).
    detail_sigma: lightness contrast is matched on the detail finer than this (px; :func:`lab_stats`), for
    use with :func:`shading_transfer` at the same scale: the source's detail takes the frame's detail
    contrast, whatever light either face is in.
    Returns ``(3, H, W)`` RGB in [0, 1]. One face at a time, so the reductions never depend on the batch.

    Why scaled by lightness: a change of light moves a and b less in the dark (a colour cast scales the
    light, and a and b with it). With the whole shift everywhere, what is darker than the skin took the
    complement of the source light's colour: brown eyes and lips came out blue from a source under warm
    light onto a target under neutral light.
    """
    s_weight = weight if src_weight is None else src_weight
    s_stats = lab_stats(src, s_weight, stride, detail_sigma)
    d_stats = target_stats if target_stats is not None else lab_stats(dst, weight, stride, detail_sigma)
    if s_stats is None or d_stats is None:
        return src
    (mu_s, sd_s), (mu_d, sd_d) = s_stats, d_stats
    ratio = (sd_d / sd_s.clamp(min=1e-3)).clamp(*STD_RATIO)
    lab = kornia.color.rgb_to_lab(src[None])[0]
    lightness = (lab[:1] - mu_s[0]) * ratio[0] + mu_d[0]
    share = (lab[:1] / mu_s[0].clamp(min=1e-3)).clamp(0.0, 1.0)
    shift = (mu_d[1:] - mu_s[1:] * ratio[1:])[:, None, None]
    ab = lab[1:] * ratio[1:, None, None] + shift * share
    if skin_tone is not None:
        ab = torch.lerp(ab, mu_d[1:, None, None].expand_as(ab), skin_tone[None])
    out = torch.cat([lightness, ab])
    return kornia.color.lab_to_rgb(out[None])[0].clamp(0.0, 1.0)


# not skin: (landmarks, grown by this share of the eye distance): eyes, brows, lips, nostrils
SKIN_HOLES = (
    (np.arange(36, 42), 0.10),
    (np.arange(42, 48), 0.10),
    (np.arange(17, 22), 0.06),
    (np.arange(22, 27), 0.06),
    (np.arange(48, 60), 0.06),
    (np.arange(31, 36), 0.06),
)
SHADING_DARK = 0.6  # target pixels darker than this share of its median skin luma are not skin (hair, frames)


def skin_weights(lm: np.ndarray, size: int) -> np.ndarray:
    """``(F, S, S) float32`` in {0, 1}: the face hull without eyes, brows, lips and nostrils (grown a little),
    where a face is bare skin. lm: ``(F, 68, 2)`` crop pixels."""
    lm = np.asarray(lm, dtype=np.float64)
    skin = (hull_distance(hull_points(lm), size) > 0).numpy().astype(np.uint8)
    for f in range(len(lm)):
        iod = inter_ocular(lm[f])
        for idx, grow in SKIN_HOLES:
            hole = np.zeros((size, size), np.uint8)
            cv2.fillPoly(hole, [np.round(lm[f, idx]).astype(np.int32)], 1)
            k = 2 * int(round(grow * iod)) + 1
            hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            skin[f] &= 1 - hole
    return skin.astype(np.float32)


def _gauss(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (OpenCV, edges replicated) of ``(H, W)`` or ``(H, W, C) float32``; large sigmas at a
    quarter of the resolution (the result is smooth at that scale anyway)."""
    if sigma >= 6.0:
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / 4.0, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


def _masked_blur(x: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian blur of ``x (H, W, C)`` over the weights ``w (H, W)``: the local weighted mean;
    where the weights around a pixel sum to almost nothing, the face's weighted mean. Sigmas of 6 px and
    more are computed at a quarter of the resolution and the (smooth) result is upsampled."""
    h, wd = w.shape
    xw = x * w[..., None]
    mean = xw.sum((0, 1)) / max(float(w.sum()), 1e-6)
    if sigma >= 6.0:
        size = (max(1, wd // 4), max(1, h // 4))
        xw = cv2.resize(xw, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA)
        sigma = sigma / 4.0
    num = cv2.GaussianBlur(xw, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE).reshape(xw.shape)
    den = cv2.GaussianBlur(w, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)[..., None]
    blend = np.clip(den / 0.05, 0.0, 1.0)  # trust the local mean once it has 5 % of a full kernel's weight
    base = blend * num / np.maximum(den, 1e-6) + (1.0 - blend) * mean
    if base.shape[:2] != (h, wd):
        base = cv2.resize(base.astype(np.float32), (wd, h), interpolation=cv2.INTER_LINEAR)
    return base.reshape(h, wd, -1)


def shading_transfer(
    src: np.ndarray, dst: np.ndarray, w_src: np.ndarray, w_dst: np.ndarray, sigma: float
) -> np.ndarray:
    """Keep ``src``'s detail and take ``dst``'s shading: in CIE Lab, ``src - base(src) + base(dst)`` with
    ``base`` the skin-weighted Gaussian mean of scale ``sigma`` px (:func:`_masked_blur`).

    src, dst: ``(S, S, 3) float32`` RGB in [0, 1] in the same (target) geometry; w_src, w_dst: ``(S, S)``
    skin weights of each. The target's lighting, skin tone and its changes over the face (a lit cheek, a
    shadowed brow) carry over, so the pasted face meets the frame without a colour step and is not flat; the
    source's features, wrinkles and pores (everything finer than ``sigma``) stay. A two-band split: the
    Laplacian-pyramid blend of Burt & Adelson (1983) with one cut, made on skin only so the target's eyes,
    brows and mouth do not leak into the shading. Returns ``(S, S, 3) float32`` RGB in [0, 1].
    """
    lab_s = cv2.cvtColor(np.ascontiguousarray(src, dtype=np.float32), cv2.COLOR_RGB2Lab)
    lab_d = cv2.cvtColor(np.ascontiguousarray(dst, dtype=np.float32), cv2.COLOR_RGB2Lab)
    out = lab_s - _masked_blur(lab_s, w_src, sigma) + _masked_blur(lab_d, w_dst, sigma)
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)


DETAIL_SIGMAS = (0.0, 0.5, 0.8, 1.2, 1.7, 2.4, 3.4)  # px: blurs tried when matching the frame's sharpness


def detail_energy(gray: np.ndarray, w: np.ndarray) -> float:
    """RMS of the finest detail (``gray (H, W) float32`` in [0, 1] minus its 1 px Gaussian blur) over the
    weights ``w (H, W)``."""
    high = gray - cv2.GaussianBlur(gray, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE)
    return float(np.sqrt((high**2 * w).sum() / max(float(w.sum()), 1.0)))


def matching_blur(src: np.ndarray, dst: np.ndarray, w_src: np.ndarray, w_dst: np.ndarray) -> float:
    """Gaussian sigma (px) that brings the detail energy of ``src`` down to ``dst``'s (0 when the source is
    not sharper), interpolated between :data:`DETAIL_SIGMAS`. src, dst: ``(S, S, 3)`` RGB in [0, 1]."""
    goal = detail_energy(luma(dst), w_dst)
    gray = luma(src)
    energies = [detail_energy(gray if sg == 0 else _gauss(gray, sg), w_src) for sg in DETAIL_SIGMAS]
    if energies[0] <= goal:
        return 0.0
    for k in range(1, len(DETAIL_SIGMAS)):
        if energies[k] <= goal:
            t = (energies[k - 1] - goal) / max(energies[k - 1] - energies[k], 1e-9)
            return DETAIL_SIGMAS[k - 1] + t * (DETAIL_SIGMAS[k] - DETAIL_SIGMAS[k - 1])
    return DETAIL_SIGMAS[-1]


def blur_image(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """``rgb (H, W, C) float32`` blurred by a Gaussian of ``sigma`` px (unchanged below 0.05)."""
    return rgb if sigma <= 0.05 else _gauss(rgb, sigma)


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
        out.append(torch.from_numpy(_gauss(share.float().numpy(), sigma)))
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


def close_source_mouth(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Paint an open source mouth shut: its inner-lip area (grown a little) takes a darkened lip tone.

    crop: ``(S, S, 3) uint8`` RGB, lm: ``(68, 2)`` crop pixels. Returns ``(S, S, 3) float32`` RGB in [0, 1].
    The target keeps its own mouth interior, so the source's teeth must never show: where the inner-lip
    polygon's straight chords cut the curved lip edge they would otherwise peek out at the mouth corners,
    and a closed target mouth would squeeze them into a white line between the lips.
    """
    size = crop.shape[0]
    img = tensor_of(crop).permute(2, 0, 1).float().div(255.0)
    lm = np.asarray(lm, dtype=np.float64)
    opening = float(np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1).mean())
    grow = min(0.15 * opening, 0.006 * size)
    if grow < 0.25:
        return img.permute(1, 2, 0).numpy()
    soft = 0.006 * size
    d_in = polygon_distance(lm[None, INNER_LIP], size, pad=grow + soft + 2.0)[0]
    d_out = polygon_distance(lm[None, 48:60], size, pad=2.0)[0]
    lips = (d_out > 0) & (d_in < -grow)
    flat = img.reshape(3, -1)[:, lips.reshape(-1)]
    tone = (flat.median(1).values if flat.shape[1] > 0 else img.reshape(3, -1).mean(1)) * 0.7
    fill = 1.0 - smooth_ramp((-d_in - grow) / soft)
    out = img * (1.0 - fill) + tone[:, None, None] * fill
    return out.permute(1, 2, 0).contiguous().numpy()


# ----------------------------------------------------------------------------------------------------------
# stage


def _fade_pair(cfg: dict, key: str) -> tuple[float, float]:
    """``classic.<key>``: two numbers ``0 <= a < b`` (a fade between them), as floats; ConfigError else."""
    fade = cfg["classic"][key]
    pair = isinstance(fade, (list, tuple)) and len(fade) == 2
    if not (pair and 0.0 <= float(fade[0]) < float(fade[1])):
        from models.errors import ConfigError

        raise ConfigError(f"classic.{key} must be two numbers 0 <= a < b, got {fade!r}")
    return float(fade[0]), float(fade[1])


class ClassicSwapStage:
    """Swap every selected face of a batch with one source face (no learned weights).

    Sets ``face.swapped`` ``(S, S, 3) uint8`` RGB and ``face.mask`` ``(S, S) float32`` in [0, 1] on every
    selected face that has ``crop`` and ``landmarks68``; other faces are left as they are. The mask fades out
    on faces turned further than ``classic.turn_fade`` (:func:`turn_weight`): a frontal photo warped onto a
    3/4 view put the eyes on the cheek (hamilton's turned faces), so such a face keeps its own.
    """

    def __init__(self, cfg: dict, source: SourceFace) -> None:
        self.cfg = cfg
        self.size = int(cfg["align"]["crop_size"])
        if source.crop.shape != (self.size, self.size, 3):
            raise ValueError(
                f"source crop is {source.crop.shape}, expected ({self.size}, {self.size}, 3): "
                "build it with make_source_face and the same config"
            )
        self.source = source
        self.color = str(cfg["classic"].get("color_transfer", "lab"))
        if self.color not in ("lab", "none"):
            raise ValueError(f"classic.color_transfer must be 'lab' or 'none', got {self.color!r}")
        self.shading_sigma = float(cfg["classic"]["shading_sigma"])
        self.match_detail = bool(cfg["classic"]["match_detail"])
        self.shape_transfer = float(cfg["classic"]["shape_transfer"])
        if not 0.0 <= self.shape_transfer <= 1.0:
            raise ValueError(f"classic.shape_transfer must be in [0, 1], got {self.shape_transfer}")
        light = float(cfg["classic"]["even_source_light"])
        if not 0.0 <= light <= 1.0:
            raise ValueError(f"classic.even_source_light must be in [0, 1], got {light}")
        self.color_smoothing = float(cfg["classic"]["color_smoothing"])
        if not 0.0 <= self.color_smoothing < 1.0:
            raise ValueError(f"classic.color_smoothing must be in [0, 1), got {self.color_smoothing}")
        self.shape_smoothing = float(cfg["classic"]["shape_smoothing"])
        if not 0.0 <= self.shape_smoothing < 1.0:
            raise ValueError(f"classic.shape_smoothing must be in [0, 1), got {self.shape_smoothing}")
        self.turn_fade = _fade_pair(cfg, "turn_fade")
        mirror = _fade_pair(cfg, "mirror_turned_source")
        self.scene = SceneCuts(cfg)
        self._colour = TrackMemory()  # Lab (mean, std) of the target per track
        self._detail = TrackMemory()  # sharpness-matching blur (px) per track
        self._shape = TrackMemory()  # the source's shape offsets in the face's own frame, per track
        self.src_points = control_points(source.landmarks68, self.size)
        self.triangles = triangulate(self.src_points)
        filled, visible, frame_zone = source_layers(source, cfg)
        if cfg["classic"].get("keep_inner_mouth", True):
            src = torch.from_numpy(close_source_mouth(filled, source.landmarks68)).permute(2, 0, 1)
        else:
            src = tensor_of(filled).permute(2, 0, 1).float().div(255.0)
        self.src_tensor = src[None].contiguous()
        self.src_visible = torch.from_numpy(visible)[None, None]  # (1, 1, S, S)
        self.src_frame_zone = torch.from_numpy(frame_zone)[None, None]  # (1, 1, S, S)
        # (1, 5, S, S): RGB, visibility, frame zone, warped together
        self.src_layers = torch.cat([self.src_tensor, self.src_visible, self.src_frame_zone], 1)
        # a turned photo's far half is replaced by its near half mirrored (see swap)
        turn = signed_turn(points5_from_68(np.asarray(source.landmarks68, dtype=np.float64)))
        ramp = (abs(turn) - mirror[0]) / (mirror[1] - mirror[0])
        self.mirror_share = (
            float(smooth_ramp(torch.tensor(ramp, dtype=torch.float64))) if np.isfinite(turn) else 0.0
        )
        self.far_sign = 1.0 if turn > 0 else -1.0
        if self.mirror_share > 0:
            flipped = np.asarray(source.landmarks68, dtype=np.float64).copy()
            flipped[:, 0] = self.size - 1 - flipped[:, 0]
            self.mirror_points = control_points(flipped[MIRROR_68], self.size)
            self.mirror_triangles = triangulate(self.mirror_points)
            self.mirror_layers = torch.flip(self.src_layers, dims=[3]).contiguous()

    def swap(
        self,
        crops: np.ndarray,
        landmarks: np.ndarray,
        target_stats: list | None = None,
        blur_filters: list | None = None,
        shape_filters: list | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Swap a stack of aligned target crops.

        crops: ``(F, S, S, 3) uint8`` RGB. landmarks: ``(F, 68, 2)`` in crop pixels. target_stats: per
        face None or a callable ``mask -> (mean, std)`` giving the Lab statistics to match (see __call__).
        blur_filters: per face a callable ``sigma -> sigma`` smoothing the sharpness match along its track.
        shape_filters: per face a callable smoothing the source's shape offsets along its track
        (:func:`smooth_shape`).
        Returns swapped ``(F, S, S, 3) uint8`` RGB and masks ``(F, S, S) float32`` in [0, 1].
        """
        n, size = len(crops), self.size
        if n == 0:
            return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.float32)
        lm = np.asarray(landmarks, dtype=np.float64)
        lm = np.where(np.isfinite(lm), lm, size / 2.0)
        shaped = source_shape_landmarks(lm, self.source.landmarks68, self.shape_transfer)
        if shape_filters is not None:
            shaped = np.stack([smooth_shape(lm[i], shaped[i], shape_filters[i]) for i in range(n)])
        dst_points = control_points(shaped, size)
        grid = piecewise_affine_grid(self.src_points, dst_points, self.triangles, size)
        warped = sample_pixels(self.src_layers, grid)  # RGB, visibility, frame zone
        masks = face_masks(lm, self.cfg)  # the target's silhouette and its own inner mouth (never moved)
        if self.mirror_share > 0:  # where the far half is stretched: from the near half, mirrored
            share = mirror_weight(grid, masks, far_half_weight(shaped, size, self.far_sign, MIRROR_BAND))
            grid = piecewise_affine_grid(self.mirror_points, dst_points, self.mirror_triangles, size)
            mirrored = sample_pixels(self.mirror_layers, grid)
            warped = torch.lerp(warped, mirrored, (share * self.mirror_share)[:, None])
        warped, visible, frame_zone = warped[:, :3], warped[:, 3], warped[:, 4]
        if self.color == "lab":
            target = tensor_of(crops).permute(0, 3, 1, 2).float().div(255.0)
            stats = target_stats if target_stats is not None else [None] * n
            out = []
            for i in range(n):
                ts = None if stats[i] is None else stats[i](masks[i])
                kw = {"target_stats": ts, "src_weight": masks[i] * visible[i], "skin_tone": frame_zone[i],
                      "detail_sigma": self._detail_sigma()}
                out.append(lab_transfer(warped[i], target[i], masks[i], **kw))
            warped = torch.stack(out)
        if self.color == "lab" and self.shading_sigma > 0:
            skin = skin_weights(shaped, size)
            target_np = target.permute(0, 2, 3, 1).numpy()
            warped_np = warped.permute(0, 2, 3, 1).contiguous().numpy()
            weight, shown = masks.numpy(), visible.numpy()
            done = []
            for i in range(n):  # one face at a time: no result depends on the batch
                gray = luma(target_np[i])
                w_dst = skin[i] * weight[i]
                on_skin = gray[w_dst > 0.5]
                if on_skin.size:  # hair and frames darker than the skin are no shading to follow
                    w_dst = w_dst * (gray >= SHADING_DARK * float(np.median(on_skin)))
                w_src = skin[i] * weight[i] * shown[i]
                face = shading_transfer(warped_np[i], target_np[i], w_src, w_dst, self.shading_sigma * size)
                if self.match_detail:  # the frame's sharpness: a sharp photo in a soft or blurred frame
                    blur = matching_blur(face, target_np[i], w_src, w_dst)
                    if blur_filters is not None:
                        blur = float(blur_filters[i](blur))
                    face = blur_image(face, blur)
                done.append(face)
            warped = torch.from_numpy(np.stack(done)).permute(0, 3, 1, 2)
        masks = masks * visible
        swapped = warped.mul(255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return swapped.numpy(), masks.contiguous().numpy()

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        cuts = self.scene.feed(batch.video_id, batch.frames) if len(batch) else np.zeros(0, bool)
        todo, crops, lm = swap_inputs(batch, self.size)
        if not todo:
            return batch
        frame_of = {id(f): int(batch.indices[i]) for i, fs in enumerate(batch.faces) for f in fs}
        cut_at = {int(batch.indices[i]) for i in np.flatnonzero(cuts)}
        stats = [
            self._smoothed_stats(batch.video_id, f, frame_of[id(f)], cut_at, c) for f, c in zip(todo, crops)
        ]
        blurs = [self._smoothed_blur(batch.video_id, f, frame_of[id(f)], cut_at) for f in todo]
        shapes = [self._smoothed_shape(batch.video_id, f, frame_of[id(f)], cut_at) for f in todo]
        swapped, masks = self.swap(
            crops,
            lm,
            stats if self.color_smoothing > 0 else None,
            blurs if self.color_smoothing > 0 else None,
            shapes if self.shape_smoothing > 0 and self.shape_transfer > 0 else None,
        )
        for face, sw, m in zip(todo, swapped, masks):
            face.swapped = sw
            face.mask = m * np.float32(turn_weight(face.points5, self.turn_fade))
        self._colour.forget_before(batch.video_id, int(batch.indices[0]))
        self._detail.forget_before(batch.video_id, int(batch.indices[0]))
        self._shape.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def _smoothed_shape(self, video_id: str, face, frame: int, cut_at: set[int]):
        """A callable ``offsets -> offsets`` (``(68, 2)`` in the face's own frame): exponentially smoothed
        along the track by ``classic.shape_smoothing``, restarting at a cut or a gap, so the per-frame fit of
        the source's shape (on landmarks that wobble) does not make the pasted eyes and nose wobble. The state
        is float32, as the colour statistics: a segment's run-in brings it to the unsegmented run's bit for
        bit (a difference decayed below float32 resolution rounds away; in float64 it lingers and moves a
        pixel's rounding now and then)."""
        return self._along_track(
            self._shape, np.float32(self.shape_smoothing), video_id, face, frame, cut_at, np.float32
        )

    def _smoothed_blur(self, video_id: str, face, frame: int, cut_at: set[int]):
        """A callable ``sigma -> sigma``: the sharpness-matching blur, smoothed along the track like the
        colour statistics (``classic.color_smoothing``), so the face does not pulse between sharp and soft.
        The state is float32 for the reason given in :meth:`_smoothed_shape` (a Python float's state differed
        by an ulp after a segment's run-in and moved one frame's pixels)."""
        return self._along_track(
            self._detail, np.float32(self.color_smoothing), video_id, face, frame, cut_at, np.float32
        )

    @staticmethod
    def _along_track(
        memory: TrackMemory, factor, video_id: str, face, frame: int, cut_at: set[int], dtype=None
    ):
        """A callable ``value -> value``: ``factor * previous + (1 - factor) * value`` along the face's track
        in ``memory`` (the state kept as ``dtype`` when given). A face with nothing to smooth against (a
        track's first frame, after a cut or a gap, an untracked face) keeps its own value exactly."""

        def smooth(now):
            prev = memory.previous(video_id, face.track_id, frame, frame in cut_at)
            state = now if dtype is None else np.asarray(now, dtype=dtype)
            if prev is not None:
                state = factor * prev + (1 - factor) * state
            memory.store(video_id, face.track_id, frame, state)
            return now if prev is None else state

        return smooth

    def _detail_sigma(self) -> float | None:
        """Scale (px) below which the colour match measures lightness contrast: the shading transfer's,
        when it is on (the source's light above it is replaced anyway); None: whole-band."""
        return self.shading_sigma * self.size if self.color == "lab" and self.shading_sigma > 0 else None

    def _smoothed_stats(self, video_id: str, face, frame: int, cut_at: set[int], crop: np.ndarray):
        """A callable ``mask -> (mean, std)``: the face's target Lab statistics, exponentially smoothed
        along its track (restarting at a cut or a missing frame), so the colour match does not flicker."""
        target = tensor_of(crop).permute(2, 0, 1).float().div(255.0)

        def stats(mask: torch.Tensor):
            now = lab_stats(target, mask, detail_sigma=self._detail_sigma())
            if now is None:
                return None
            prev = self._colour.previous(video_id, face.track_id, frame, frame in cut_at)
            if prev is not None:
                a = self.color_smoothing
                now = (a * prev[0] + (1 - a) * now[0], a * prev[1] + (1 - a) * now[1])
            self._colour.store(video_id, face.track_id, frame, now)
            return now

        return stats

    def flush(self) -> list[FrameBatch]:
        self._colour.clear()
        self._detail.clear()
        self._shape.clear()
        return []
