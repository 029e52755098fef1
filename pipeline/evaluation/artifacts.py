"""Artifacts a viewer sees at once: content pasted onto skin, occluders painted over, a seam at the border.

Measured per frame in the original's face area with each image's own skin model; see
:func:`artifact_measures`. Images are ``(H, W, 3) uint8`` RGB, landmarks ``(68, 2)`` pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.occluders import inter_ocular

# Artifacts a viewer sees at once (``artifacts`` in the result). Per scored frame, in the original's face area
# (its jaw line and brows lifted by ARTIFACT_BROW_LIFT IOD, features exempt), the pixels of both images are
# skin or not by robust YCrCb models of the original's cheeks (distance > ARTIFACT_SKIN_DISTANCE robust
# stds, luma counted ARTIFACT_LUMA_TOLERANCE times less, or luma below ARTIFACT_DARK of the skin's): the
# skin a viewer expects there is the target's, and a swap takes the target's tone.
ARTIFACT_BROW_LIFT = 0.5
ARTIFACT_SKIN_DISTANCE = 4.0
ARTIFACT_LUMA_TOLERANCE = 2.0
ARTIFACT_DARK = 0.55
# Features are exempt in both images, by the original's landmarks and by the output's own (dlib on the
# output): a swap that keeps the source's brow height or brow thickness puts its brows on what was the
# target's skin, and those brows are the source's face, not foreign content. dlib's brow points follow a
# brow's upper edge, so a brow's zone reaches ARTIFACT_BROW_DEPTH IOD below them (a thick brow, measured on
# the grid's outputs: Kit Harington's and Eric Clapton's reach 0.12-0.15).
ARTIFACT_BROW_DEPTH = 0.15
# seam: the colour step at the face's border. Bands along the same outline (signed distance, IOD, positive
# inside): the change (output - original, CIE Lab) just inside SEAM_INNER against the change at the border
# SEAM_BORDER, compared per direction from the face centre (SEAM_BINS sectors)
SEAM_INNER = (0.10, 0.30)
SEAM_BORDER = (-0.08, 0.02)
SEAM_BINS = 36
SEAM_MIN_PIXELS = 5  # per band and sector


def _nonskin(
    image: np.ndarray, reference: np.ndarray, cheeks: list[np.ndarray], lower: np.ndarray
) -> np.ndarray | None:
    """``(H, W) bool``: pixels of ``image`` (uint8 RGB) that are not skin by robust YCrCb models of the
    ``reference`` image's skin, one per cheek in ``cheeks`` (a pixel is skin when it is near either: a face
    lit from one side has two skin tones, and one model of both would call everything between them skin).
    In the ``lower`` face (below the nose) only colour counts: a beard differs from skin in lightness, a
    collar or a microphone's foam in colour; a source's beard is its face, not foreign content."""
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32) / 255.0
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2YCrCb).astype(np.float32) / 255.0
    full = colour = None
    for cheek in cheeks:
        pix = ref[cheek]
        if len(pix) < 15:
            continue
        centre = np.median(pix, 0)
        spread = np.maximum(1.4826 * np.median(np.abs(pix - centre), 0), [0.03, 0.008, 0.008])
        spread[0] *= ARTIFACT_LUMA_TOLERANCE
        z = ((ycc - centre) / spread) ** 2
        far = (np.sqrt(z.sum(-1)) > ARTIFACT_SKIN_DISTANCE) | (ycc[..., 0] < ARTIFACT_DARK * centre[0])
        off = np.sqrt(z[..., 1:].sum(-1)) > ARTIFACT_SKIN_DISTANCE
        full = far if full is None else full & far
        colour = off if colour is None else colour & off
    if full is None:
        return None
    return np.where(lower, colour, full)


def _region(shape: tuple[int, int], points: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """``shape`` bool: inside the convex hull of ``points`` (px), dilated by ``grow`` px."""
    m = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    if grow >= 1:
        k = 2 * int(round(grow)) + 1
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return m.astype(bool)


def _up(p: np.ndarray) -> np.ndarray:
    """Unit vector from the chin (8) to the top of the nose bridge (27) of ``(68, 2)`` points: face up."""
    up = p[27] - p[8]
    return up / max(np.linalg.norm(up), 1e-6)


def _features(shape: tuple[int, int], p: np.ndarray, iod: float) -> np.ndarray:
    """``shape`` bool: the eyes, brows, lips and nose of the face with ``(68, 2)`` points ``p`` (px, in the
    same crop), grown so that a viewer's face part lies inside: eyes by 0.12 IOD; each brow as the band from
    its points down by ARTIFACT_BROW_DEPTH, grown by 0.06; lips by 0.06; the nose's lower points by 0.08."""
    down = -ARTIFACT_BROW_DEPTH * iod * _up(p)
    zone = _region(shape, p[36:42], 0.12 * iod) | _region(shape, p[42:48], 0.12 * iod)
    for brow in (p[17:22], p[22:27]):
        zone |= _region(shape, np.concatenate([brow, brow + down]), 0.06 * iod)
    return zone | _region(shape, p[48:60], 0.06 * iod) | _region(shape, p[31:36], 0.08 * iod)


def artifact_measures(
    original: np.ndarray,
    output: np.ndarray,
    landmarks68: np.ndarray,
    output_landmarks68: np.ndarray | None = None,
) -> dict | None:
    """Foreign content, covered occluders and seam strength of one output frame against its original.

    original, output: ``(H, W, 3) uint8`` RGB; landmarks68: the original face's ``(68, 2)`` (frame px);
    output_landmarks68: the output face's (dlib on the output), whose features are exempt too (see
    ARTIFACT_BROW_DEPTH); None exempts the original's features only.
    - ``foreign_share``: share of the face area that is skin in the original but not in the output
      (hair, a fringe or glasses pasted onto skin; below the nose only what differs in colour: a
      source's beard belongs to its face);
    - ``occluder_covered_share``: share of the face area that is not skin in the original (its fringe,
      glasses, a hand) but skin in the output (painted over);
    - ``seam``: the colour step at the face's border (jaw line and lifted brows), CIE76 delta E: in each of
      ``SEAM_BINS`` directions from the face centre, how much more the output changed the colour just
      inside the border (``SEAM_INNER``) than at the border itself (``SEAM_BORDER``), the median over
      directions. A pasted face whose tone does not meet the frame's (a pale face on darker skin, a grey
      face on warm light) has a step there; a face that takes the frame's tone at its edge has none,
      however different its features. Features are left out (as for the shares).
    None when the face is too small or its cheeks cannot be sampled.
    """
    lm = np.asarray(landmarks68, dtype=np.float64)
    iod = inter_ocular(lm)
    if iod < 12:
        return None
    h, w = original.shape[:2]
    x1, y1 = np.floor(lm.min(0) - 1.0 * iod).astype(int)
    x2, y2 = np.ceil(lm.max(0) + 1.0 * iod).astype(int)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    a, b = original[y1:y2, x1:x2], output[y1:y2, x1:x2]
    p = lm - [x1, y1]
    shape = a.shape[:2]
    up = _up(p)
    # jaw left to right, then the lifted brows right to left: one simple closed polygon
    outline = np.concatenate([p[0:17], p[26:16:-1] + ARTIFACT_BROW_LIFT * iod * up])
    area = _region(shape, outline)
    exempt = _features(shape, p, iod)
    cheeks = [_region(shape, p[side]) & ~exempt for side in ([1, 2, 3, 31, 39], [15, 14, 13, 35, 42])]
    if output_landmarks68 is not None:
        exempt |= _features(shape, np.asarray(output_landmarks68, dtype=np.float64) - [x1, y1], iod)
    rows = np.arange(shape[0])[:, None]
    lower = np.broadcast_to(rows > p[33, 1], shape)
    ns_a, ns_b = _nonskin(a, a, cheeks, lower), _nonskin(b, a, cheeks, lower)
    scored = area & ~exempt
    n = int(scored.sum())
    if ns_a is None or ns_b is None or n == 0:
        return None
    return {
        "foreign_share": float((scored & ~ns_a & ns_b).sum() / n),
        "occluder_covered_share": float((scored & ns_a & ~ns_b).sum() / n),
        "seam": border_step(a, b, p, outline, exempt, iod),
    }


def _lab(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB → ``(H, W, 3) float32`` CIE Lab (L in [0, 100], a and b about 0)."""
    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB).astype(np.float32)
    return lab * np.float32([100.0 / 255.0, 1.0, 1.0]) - np.float32([0.0, 128.0, 128.0])


def border_step(
    original: np.ndarray,
    output: np.ndarray,
    p: np.ndarray,
    outline: np.ndarray,
    exempt: np.ndarray,
    iod: float,
) -> float | None:
    """The ``seam`` of :func:`artifact_measures`: median over directions of the delta E between the output's
    colour change just inside the face's border and at it. Images ``(H, W, 3) uint8`` RGB, landmarks ``p``
    and the ``outline`` polygon in their pixels, ``exempt`` ``(H, W) bool`` features; None when too few
    directions can be sampled (a face too small for bands a tenth of an eye distance wide)."""
    shape = original.shape[:2]
    change = _lab(output) - _lab(original)
    inside = np.zeros(shape, np.uint8)
    cv2.fillPoly(inside, [np.round(outline).astype(np.int32)], 1)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5) - cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
    depth /= iod
    inner = (depth >= SEAM_INNER[0]) & (depth <= SEAM_INNER[1]) & ~exempt
    border = (depth >= SEAM_BORDER[0]) & (depth <= SEAM_BORDER[1]) & ~exempt
    centre = p[[27, 30, 33, 8]].mean(0)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    angle = np.arctan2(yy - centre[1], xx - centre[0])
    sector = ((angle + np.pi) / (2 * np.pi) * SEAM_BINS).astype(int) % SEAM_BINS
    steps = []
    for k in range(SEAM_BINS):
        mi, mb = inner & (sector == k), border & (sector == k)
        if mi.sum() >= SEAM_MIN_PIXELS and mb.sum() >= SEAM_MIN_PIXELS:
            steps.append(float(np.linalg.norm(change[mi].mean(0) - change[mb].mean(0))))
    return float(np.median(steps)) if len(steps) >= SEAM_BINS // 3 else None
