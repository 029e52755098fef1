"""Things that cover a face in an aligned crop: glasses and hair, from 68 landmarks and pixels (no weights).

Used on both sides of a swap: the classic swap leaves the source photo's glasses and hair behind
(``classic.source_glasses=drop``; its fringe is never pasted) and the mask stage keeps the target's own
frames over the pasted face.

Glasses (:func:`glasses_map`):
Where glasses are: a rim zone around each eye (a square-ish superellipse over the eye centre,
``RIM_HALF_WIDTH`` by ``RIM_HALF_HEIGHT`` inter-ocular distances, IOD: big and square frames reach well
below the eye and past its corners) and the bridge between the eyes. Which pixels are frame:
thin or thick structures darker than their surroundings (a morphological black-hat of the luma, kernel
``BLACKHAT_KERNEL`` IOD) or far darker than the cheek skin; the eyes themselves (their landmark polygon
grown by ``EYE_GROW`` IOD) and the brows are never frame. Whether there are glasses at all: the bridge
must carry one connected stroke, thin (black-hat) or dark, across ``BRIDGE_MIN_SPAN`` of its width (a
frame crosses the nose between the eyes; frown lines and shadows there run short or vertical), and there
must be a thin stroke below both eyes (the lower rims); or, for sunglasses, both eyes' lens areas are dark
(``SUNGLASSES_SHARE``). Measured on the 35 shared photos: every pair of
glasses found (spans 0.94-0.99), no false find (the largest span without glasses: 0.73, an older man's
creases); the sunglasses fail the bridge test (their frames reach the face outline and are taken as hair)
and are found by their lenses.
Without glasses nothing is marked, so the shadows and creases around bare eyes are never frames. Lenses:
with glasses present, what is far darker than the skin in the rim zone is frame, except the eyes seen
through a clear lens; a lens that hides the eyes (their upper quartile far darker than the skin) is returned
as a separate map, since nothing of the face behind it can be recovered.
"""

from __future__ import annotations

import cv2
import numpy as np

LEFT_EYE, RIGHT_EYE = np.arange(36, 42), np.arange(42, 48)
BROWS = np.arange(17, 27)

RIM_HALF_WIDTH = 0.62  # IOD: rim zone around each eye centre, horizontally
RIM_HALF_HEIGHT = 0.50  # IOD, vertically (brows are excluded separately)
RIM_ZONE_POWER = 4  # the zone is a superellipse |u/w|^p + |v/h|^p <= 1: square-ish frames' corners included
BLACKHAT_KERNEL = 0.10  # IOD: dark structures narrower than this stand out in the black-hat
BLACKHAT_MIN = 0.06  # black-hat response (luma units of [0, 1]) that marks a frame pixel
DARK_SHARE = 0.55  # pixels with luma below this share of the skin's are frame or lens
EYE_GROW = 0.05  # IOD: the eye polygon grown by this is never a frame
BRIDGE_MIN_SPAN = 0.85  # one thin (or one dark) stroke must span this share of the bridge: glasses present
LENS_DARK_SHARE = 0.45  # sunglasses: eye zone luma below this share of the skin's is lens
# Sunglasses found by their lenses alone (their frames reach the face outline and the bridge test may miss
# them): an ellipse of LENS_HALF_AXES IOD (along, across the eye axis) around each eye centre is darker
# than LENS_DARK_SHARE of the skin on at least SUNGLASSES_SHARE of its area, for both eyes. 35 shared photos:
# prnet_man_sunglasses_a 0.91 / 0.86; without sunglasses at most 0.92 / 0.56 (jack_dorsey_b, one eye in
# deep stage shadow), 0.70 / 0.06 (a profile's far eye), otherwise below 0.50 on either eye.
LENS_HALF_AXES = (0.38, 0.25)
SUNGLASSES_SHARE = 0.75
LENS_LIGHT_SHARE = 0.6  # with sunglasses: a gradient lens's lighter lower part, darker than this, is lens
FRAME_SKIN_DISTANCE = 4.0  # glasses present: rim-zone pixels this far from the skin colour (robust stds)


CHEEKS = ((1, 2, 3, 31, 39), (15, 14, 13, 35, 42))  # below the eyes, beside the nose, above the mouth


def inter_ocular(landmarks68: np.ndarray) -> float:
    """Distance (px) between the centres of the two eyes (points 36-41 and 42-47) of ``(68, 2)``."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return float(np.linalg.norm(lm[LEFT_EYE].mean(0) - lm[RIGHT_EYE].mean(0)))


def luma(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3) float32`` RGB in [0, 1] → ``(...) float32`` luma (BT.601), contiguous."""
    return np.ascontiguousarray(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114, np.float32)


def _cheeks(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """``(S, S) bool``: both cheek polygons, where a face's skin colour is sampled."""
    out = np.zeros(shape, bool)
    for side in CHEEKS:
        out |= polygon(shape, lm[list(side)])
    return out


def polygon(shape: tuple[int, int], points: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """``(S, S) bool``: inside the closed polygon ``points`` (crop pixels), dilated by ``grow`` px."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(points).astype(np.int32)], 1)
    if grow >= 1.0:
        k = 2 * int(round(grow)) + 1
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return m.astype(bool)


def _skin_luma(gray: np.ndarray, lm: np.ndarray) -> float:
    """Median luma of the cheeks."""
    vals = gray[_cheeks(gray.shape, lm)]
    return float(np.median(vals)) if vals.size >= 20 else float(np.median(gray))


def _off_skin(crop: np.ndarray, lm: np.ndarray, limit: float) -> np.ndarray:
    """``(S, S) bool``: YCrCb distance to the cheek skin (robust median and spread, luma counted twice
    less) above ``limit`` robust standard deviations."""
    size = crop.shape[0]
    ycc = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2YCrCb).astype(np.float32) / 255.0
    pix = ycc[_cheeks((size, size), lm)]
    if len(pix) < 20:
        return np.zeros((size, size), bool)
    centre = np.median(pix, 0)
    spread = np.maximum(1.4826 * np.median(np.abs(pix - centre), 0), [0.03, 0.01, 0.01])
    spread[0] *= 2.0
    return np.sqrt((((ycc - centre) / spread) ** 2).sum(-1)) > limit


def _eye_frames(lm: np.ndarray, size: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Each eye's own frame over an ``(S, S)`` crop from ``(68, 2)`` landmarks ``lm`` (crop px): the unit eye
    axis ``(2,)`` and, per eye (image-left first), ``(S, S) float32`` maps u along that axis and v across it
    (down), in pixels from the eye's centre."""
    centres = np.stack([lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0)])
    axis = (centres[1] - centres[0]) / max(float(np.linalg.norm(centres[1] - centres[0])), 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return axis, [
        ((xx - c[0]) * axis[0] + (yy - c[1]) * axis[1], -(xx - c[0]) * axis[1] + (yy - c[1]) * axis[0])
        for c in centres
    ]


def lens_areas(eye_uv: list[tuple[np.ndarray, np.ndarray]], iod: float) -> list[np.ndarray]:
    """Where sunglasses' lenses lie: an ``(S, S) bool`` ellipse of ``LENS_HALF_AXES`` IOD (along, across the
    eye axis) around each eye centre, from :func:`_eye_frames`' per-eye maps, image-left eye first."""
    a, b = LENS_HALF_AXES[0] * iod, LENS_HALF_AXES[1] * iod
    return [(u / a) ** 2 + (v / b) ** 2 <= 1.0 for u, v in eye_uv]


def _hides_eyes(gray: np.ndarray, skin: float, areas: list[np.ndarray]) -> bool:
    """Both lens areas darker than ``LENS_DARK_SHARE`` of the skin's luma on ``SUNGLASSES_SHARE`` of them."""
    dark = gray < LENS_DARK_SHARE * skin
    return all(a.any() and float(dark[a].mean()) >= SUNGLASSES_SHARE for a in areas)


def hides_eyes(crop: np.ndarray, lm: np.ndarray) -> bool:
    """Whether dark lenses (sunglasses) hide both eyes of an aligned face: ``(S, S, 3) uint8`` RGB crop,
    ``(68, 2)`` landmarks in its pixels. Nothing of the eyes behind them can be taken from the photo."""
    lm = np.asarray(lm, dtype=np.float64)
    gray = luma(crop.astype(np.float32) / 255.0)
    _, eye_uv = _eye_frames(lm, crop.shape[0])
    return _hides_eyes(gray, _skin_luma(gray, lm), lens_areas(eye_uv, inter_ocular(lm)))


def glasses_map(
    crop: np.ndarray, lm: np.ndarray, hair: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Frame pixels and dark-lens pixels of one aligned face, each ``(S, S) float32`` in {0, 1}, and whether
    glasses were found (both maps are all zero when not). Frames never cover the eyes; a lens is marked only
    where it is dark enough to hide them (sunglasses, tinted lenses).

    crop: ``(S, S, 3) uint8`` RGB. lm: ``(68, 2)`` landmarks in crop pixels. hair: ``(S, S)`` from
    :func:`hair_map`; hair is never frame (a fringe down to the brows crosses the bridge too).
    """
    size = crop.shape[0]
    lm = np.asarray(lm, dtype=np.float64)
    shape = (size, size)
    gray = luma(crop.astype(np.float32) / 255.0)
    iod = inter_ocular(lm)
    none = np.zeros(shape, np.float32)
    if iod < 8.0:
        return none, none, False
    k = max(3, 2 * int(round(BLACKHAT_KERNEL * iod / 2)) + 1)
    blackhat = cv2.morphologyEx(
        gray, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    )
    skin = _skin_luma(gray, lm)
    dark = gray < DARK_SHARE * skin
    candidate = (blackhat > BLACKHAT_MIN) | dark
    if hair is not None:
        candidate &= hair < 0.5
    thin = blackhat > BLACKHAT_MIN  # presence is tested on thin dark strokes only: broad shadows are no frame
    # zones: an ellipse around each eye, the bridge between them
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    axis, eye_uv = _eye_frames(lm, size)  # u along the eye axis, v across it (down), from each eye's centre
    zone = np.zeros(shape, bool)
    for u, v in eye_uv:
        zone |= (
            np.abs(u / (RIM_HALF_WIDTH * iod)) ** RIM_ZONE_POWER
            + np.abs(v / (RIM_HALF_HEIGHT * iod)) ** RIM_ZONE_POWER
            <= 1.0
        )
    eyes = polygon(shape, lm[LEFT_EYE], EYE_GROW * iod) | polygon(shape, lm[RIGHT_EYE], EYE_GROW * iod)
    brows = polygon(shape, lm[BROWS[:5]], 0.03 * iod) | polygon(shape, lm[BROWS[5:]], 0.03 * iod)
    # bridge: between the inner eye corners, from the eye line up to the brow line's lower edge
    inner_l, inner_r = lm[39], lm[42]
    mid = (inner_l + inner_r) / 2
    half_w = 0.35 * float(np.linalg.norm(inner_r - inner_l))
    up = np.array([axis[1], -axis[0]])
    u = (xx - mid[0]) * axis[0] + (yy - mid[1]) * axis[1]
    v = (xx - mid[0]) * up[0] + (yy - mid[1]) * up[1]
    bridge = (np.abs(u) <= half_w) & (v >= -0.05 * iod) & (v <= 0.18 * iod)

    def longest_span(pixels: np.ndarray) -> float:
        """Widest connected stroke of ``pixels`` in the bridge, as a share of the bridge's width."""
        strokes = cv2.dilate((pixels & bridge).astype(np.uint8), np.ones((3, 3), np.uint8)) & bridge
        n_labels, labels = cv2.connectedComponents(strokes.astype(np.uint8), connectivity=8)
        best = 0.0
        for k in range(1, n_labels):
            uk = u[labels == k]
            best = max(best, float(uk.max() - uk.min()) / (2 * half_w))
        return best

    span = max(longest_span(thin & candidate), longest_span(dark & candidate))
    # and a lower rim: below each eye centre, between the eye and the cheek, a frame or lens edge
    lower = 0
    for u, v in eye_uv:
        strip = (np.abs(u) <= 0.15 * iod) & (v >= 0.12 * iod) & (v <= 0.45 * iod)
        rows_hit = np.unique(np.round(v[strip & candidate & thin]).astype(int))
        lower += len(rows_hit) > 0
    ellipses = lens_areas(eye_uv, iod)
    sunglasses = _hides_eyes(gray, skin, ellipses)
    if not sunglasses and (span < BRIDGE_MIN_SPAN or lower < 2):
        return none, none, False
    # with glasses present, frames of any colour (tortoiseshell, clear plastic edges): in the rim zone,
    # what is far from the cheek skin's colour
    frame = (candidate | _off_skin(crop, lm, FRAME_SKIN_DISTANCE)) & (zone | bridge) & ~eyes & ~brows
    # a lens counts as dark only where it hides the eye: through clear lenses the eyes (pupils, lashes) are
    # darker than the skin too, and they are the face
    eye_pixels = gray[eyes]
    dark_lens = eye_pixels.size > 0 and float(np.percentile(eye_pixels, 75)) < LENS_DARK_SHARE * skin
    lens = (gray < LENS_DARK_SHARE * skin) & zone & ~brows & (dark_lens | ~eyes)
    if sunglasses:  # the whole lens, its lighter lower part too: nothing of the eyes shows through it
        dark_lens = True
        lens |= (ellipses[0] | ellipses[1] | ((gray < LENS_LIGHT_SHARE * skin) & zone)) & ~brows
    # connect the thin strokes and grow them a little so the frame's soft edge is included
    g = max(3, 2 * int(round(0.02 * iod)) + 1)

    def grown(pixels: np.ndarray) -> np.ndarray:
        closed = cv2.morphologyEx(pixels.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        return cv2.dilate(closed, np.ones((g, g), np.uint8)).astype(np.float32)

    lenses = grown(lens) if dark_lens else none
    return np.where(lenses > 0, 0.0, grown(frame | lens)).astype(np.float32), lenses, True


# hair (and hats) reaching into the face from its outline
HAIR_SATURATION_SHARE = 0.55  # chroma saturation below this share of the skin's: hair-like (not skin)
HAIR_MAX_LUMA = 1.1  # ... unless brighter than this share of the skin's luma (a highlight on skin)
MIN_SKIN_SATURATION = 0.05  # a nearly grey photo: only the darkness test is used
HAIR_EDGE = 0.10  # IOD: a hair region must reach this close to the hull outline (hair enters from outside)
HAIR_GROW = 0.05  # IOD: hair regions are grown by this (its soft edge and the shadow it casts on the skin)
# texture (the source photo only, ``hair_map(photo=True)``): a knitted hat or hair lit warm can be nearly
# as saturated as the skin, but is far rougher. Roughness: the RMS of the luma's detail (the luma minus its
# Gaussian blur of TEXTURE_DETAIL IOD) averaged over TEXTURE_WINDOW IOD; a pixel above HAIR_TEXTURE times
# the cheeks' median roughness that is also somewhat greyer than the skin (HAIR_TEXTURE_SATURATION) is
# hair-like. Over the 35 shared photos: compreface_woman1_a's beanie edge (saturation 0.78-0.94 of the
# skin's) is found; what else it adds lies at the edges of hair already found (temples, side hair); the
# creased forehead of compreface_group_office_5 is as saturated as the skin and stays face.
TEXTURE_DETAIL = 0.03
TEXTURE_WINDOW = 0.05
HAIR_TEXTURE = 2.5
HAIR_TEXTURE_SATURATION = 0.95
CLOTHING_SATURATION = 1.8  # below the nose: saturation above this share of the skin's is not skin
CLOTHING_HUE = 0.6  # radians (about 35 degrees) from the skin's hue in the CbCr plane: not skin


def hair_map(
    crop: np.ndarray, lm: np.ndarray, hull_depth: np.ndarray, photo: bool = False
) -> np.ndarray:
    """Hair, hats, clothing and other non-skin reaching into the face from its outline: ``(S, S) float32``.

    crop: ``(S, S, 3) uint8`` RGB; lm: ``(68, 2)`` crop pixels; hull_depth: ``(S, S)`` signed distance (px,
    positive inside) to the paste hull. A pixel above the nose's base is hair-like when it is far darker than
    the cheek skin (``DARK_SHARE``) or, in a colour photo, much less saturated than the skin
    (``HAIR_SATURATION_SHARE``: hair of any colour, grey and blond included, is nearer grey than skin) and
    not brighter than it. On the source ``photo`` (not on video frames, whose compression noise would make
    these decisions flicker) also when it is far rougher than the cheeks and somewhat greyer
    (``HAIR_TEXTURE``: a knitted hat), and what the hair encloses (a cap's badge). Below the nose, where a
    beard belongs to the face, only what is much more saturated than the skin or of another hue counts (a
    collar, a scarf). Eyes, brows, nostrils and lips are exempt; only regions that touch the hull's outline
    (within ``HAIR_EDGE`` IOD; above the eyes or below the nose) count, so eye-bag shadows and creases inside
    the face never do.
    """
    size = crop.shape[0]
    lm = np.asarray(lm, dtype=np.float64)
    shape = (size, size)
    c = crop.astype(np.float32) / 255.0
    gray = luma(c)
    sat = np.hypot((c[..., 0] - gray) * 0.713, (c[..., 2] - gray) * 0.564)
    iod = inter_ocular(lm)
    cheeks = _cheeks(shape, lm)
    if cheeks.sum() < 20 or iod < 8.0:
        return np.zeros(shape, np.float32)
    skin_luma = float(np.median(gray[cheeks]))
    skin_sat = float(np.median(sat[cheeks]))
    hairlike = gray < DARK_SHARE * skin_luma
    if skin_sat >= MIN_SKIN_SATURATION:
        hairlike |= (sat < HAIR_SATURATION_SHARE * skin_sat) & (gray < HAIR_MAX_LUMA * skin_luma)
        if photo:
            detail = gray - cv2.GaussianBlur(gray, (0, 0), TEXTURE_DETAIL * iod)
            rough = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), TEXTURE_WINDOW * iod))
            skin_rough = max(float(np.median(rough[cheeks])), 1e-4)
            hairlike |= (
                (rough > HAIR_TEXTURE * skin_rough)
                & (sat < HAIR_TEXTURE_SATURATION * skin_sat)
                & (gray < HAIR_MAX_LUMA * skin_luma)
            )
    grow = 0.12 * iod
    exempt = (
        polygon(shape, lm[LEFT_EYE], grow)
        | polygon(shape, lm[RIGHT_EYE], grow)
        | polygon(shape, lm[BROWS[:5]], 0.04 * iod)
        | polygon(shape, lm[BROWS[5:]], 0.04 * iod)
        | polygon(shape, lm[np.r_[31:36]], grow)
    )
    yy = np.arange(size)[:, None]
    upper = np.broadcast_to(yy < lm[33, 1], shape)
    inside = hull_depth > -0.5
    # below the nose, clothing, a scarf or a hand of another colour: much more saturated than the skin or of
    # another hue (a beard is less saturated, and kept: it is part of the source's face)
    hue = np.arctan2((c[..., 2] - gray) * 0.564, (c[..., 0] - gray) * 0.713)
    skin_hue = float(np.median(hue[cheeks]))
    off_hue = np.abs(np.mod(hue - skin_hue + np.pi, 2.0 * np.pi) - np.pi) > CLOTHING_HUE  # wrapped
    colourful = (sat > CLOTHING_SATURATION * skin_sat) | (off_hue & (sat > MIN_SKIN_SATURATION))
    lips = polygon(shape, lm[48:60], 0.08 * iod)
    lower = ~upper & colourful & ~lips
    cand = ((hairlike & upper | lower) & inside & ~exempt).astype(np.uint8)
    cand = cv2.morphologyEx(cand, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, labels = cv2.connectedComponents(cand, connectivity=8)
    eye_line = max(lm[36, 1], lm[45, 1])  # hair enters over the forehead and the temples, not the cheeks
    edge = inside & (hull_depth < HAIR_EDGE * iod) & ((yy < eye_line) | ~upper)
    touching = np.unique(labels[edge & (labels > 0)])
    out = np.isin(labels, touching[touching > 0])
    if photo:  # what such hair encloses inside the hull is not face either (a cap's badge, a hair clip):
        # only what still connects to the nose, mouth and eyes is
        _, free = cv2.connectedComponents((inside & ~out).astype(np.uint8), connectivity=4)
        seeds = np.round(lm[np.r_[27:36, 36:48, 48:68]]).astype(int).clip(0, size - 1)
        face = np.unique(free[seeds[:, 1], seeds[:, 0]])
        out |= inside & ~out & ~np.isin(free, face[face > 0])
    g = max(3, 2 * int(round(HAIR_GROW * iod)) + 1)  # the hair's soft edge and the shadow it casts
    return cv2.dilate(out.astype(np.uint8), np.ones((g, g), np.uint8)).astype(np.float32)
