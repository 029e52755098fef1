"""Jitter: how much the pasted face moves unlike the face it covers, by dense optical flow at its landmarks.

Per frame pair, in inter-ocular distances (IOD); see :func:`flow_jitter` and the ``jitter`` entry of the
evaluator's module doc (:mod:`pipeline.evaluation.evaluate`).
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.occluders import inter_ocular

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


def jitter_by_region(jitter: list[np.ndarray]) -> dict[str, float | None]:
    """Mean over frames of each ``JITTER_REGIONS`` part's mean per-landmark jitter (IOD)."""
    position = {int(k): i for i, k in enumerate(JITTER_LANDMARKS)}
    out: dict[str, float | None] = {}
    for name, points in JITTER_REGIONS.items():
        columns = [position[int(k)] for k in points]
        out[name] = jitter_mean([j[columns] for j in jitter])
    return out


def jitter_mean(jitter: list[np.ndarray]) -> float | None:
    """Mean over frame pairs of each pair's mean jitter over its reliable landmarks (IOD)."""
    per_pair = [np.nanmean(j) for j in jitter if np.isfinite(j).any()]
    return float(np.mean(per_pair)) if per_pair else None
