"""The classic swap's source face: the photo's face aligned like the targets and made ready to paste.

What of it is pasted (glasses frames filled, hair and dark lenses hidden, a fringe-covered brow let go), its
one-sided light evened out and its open mouth painted shut.

No learned weights. A source crop is ``(S, S, 3) uint8`` RGB with its 68 landmarks in crop pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from models.runtime import check_shape
from stages.align import alignment, crop_faces
from stages.colour_match import gauss, masked_blur, skin_weights
from stages.face_warp import MIRROR_68, control_points, piecewise_affine_grid, sample_pixels, triangulate
from stages.geometry import tensor_of, transform_points
from stages.mask_geometry import INNER_LIP, hull_distance, hull_points, polygon_distance, smooth_ramp
from stages.occluders import BROWS, LEFT_EYE, RIGHT_EYE, glasses_map, hair_map, inter_ocular, polygon


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


def brow_covered(hair: np.ndarray, lm: np.ndarray, brow: np.ndarray) -> bool:
    """Whether a fringe covers the brow ``brow`` (indices into the 68 points ``lm``, crop pixels): the hair
    map ``hair`` ``(S, S)`` fills at least ``BROW_COVER_SHARE`` of the strip from ``BROW_COVER_PROBE[0]``
    to ``BROW_COVER_PROBE[1]`` IOD above the brow's points. dlib then puts the brow's points on the
    fringe's lower edge, the real brow lying under the hair (John Lennon's photos); a patch of hair at the
    temple or a highlight taken for hair fills only part of the strip."""
    iod = inter_ocular(lm)
    near, far = (lm[brow] - [0.0, d * iod] for d in BROW_COVER_PROBE)
    strip = polygon(hair.shape, np.concatenate([near, far[::-1]]))
    return bool(strip.any() and float((hair[strip] > 0.5).mean()) >= BROW_COVER_SHARE)


def source_layers(source: SourceFace, cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What of the source crop is pasted: its crop with glasses frames filled, its visibility, and where
    the frames were.

    Returns ``(S, S, 3) uint8`` RGB and two ``(S, S) float32`` maps in [0, 1]: visibility, and the filled
    frames grown by ``FRAME_ZONE_GROW`` IOD and softened (what the fill left of them takes the target skin's a
    and b, see :func:`stages.colour_match.lab_transfer`; never over the eyes and brows; all zero without
    glasses or with ``keep``). With ``classic.source_glasses=drop`` the frames are filled from the source's
    own skin around them (Telea inpainting over ``FRAME_FILL_RADIUS`` IOD): frames are thin, so the fill keeps
    the source's eyes and the skin between the rims, which carry its identity. The visibility is 1 where the
    crop shows the face and 0 on its hair, hat and fringe (``classic.source_hair=drop``) and on dark lenses
    that hide the eyes (nothing of the face behind them is left to fill from); there the target's own skin
    shows. With ``drop``, all of the crop beyond the source's own hull is hidden too (a target's paste hull
    can reach past it where the source's brows sit low: a cap's brim).
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
    features = polygon(shape, lm[LEFT_EYE]) | polygon(shape, lm[RIGHT_EYE])
    # which brows a fringe covers is read on the colour-only map (what BROW_COVER_SHARE was measured on): a
    # knitted hat that only texture finds ends above the brows, with skin between (compreface_woman1_a)
    fringe = hair_map(source.crop, lm, depth) if cfg["classic"]["source_hair"] == "drop" else hidden
    for brow in (BROWS[:5], BROWS[5:]):
        if brow_covered(fringe, lm, brow):  # its points lie on the fringe's dark edge: it goes with it
            band = polygon(shape, lm[brow], BROW_COVER_GROW * iod).astype(np.float32)
            hidden = np.maximum(hidden, band)
        else:
            features |= polygon(shape, lm[brow])
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
    moves by ``strength / 2`` of the difference between the skin-weighted local means (:func:`masked_blur`)
    of the crop and of its mirror, measured where both halves show skin. Both halves meet at their mean,
    and the light the target's shading replaces (:func:`stages.colour_match.shading_transfer`, above
    ``classic.shading_sigma``) no longer leaves the source's half-shadow at the scale of the eye sockets and
    the nose's side (john_lennon_b, eric_clapton_a: lit from one side, pasted as a dark half-face). Only on
    the skin and the features it surrounds, fading out beyond it; the image elsewhere is unchanged.
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
    step = masked_blur(lab, weight, sigma) - masked_blur(lab_m, weight, sigma)
    # on the skin and what it surrounds (eyes, brows, lips); fading out within about sigma of its edge
    near = np.clip(2.0 * gauss(skin.astype(np.float32), sigma), 0.0, 1.0)
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
