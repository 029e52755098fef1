"""Landmark motion between two frames by optical flow (sparse Lucas-Kanade or dense DIS), round-trip checked.

Used by the smoothing stage to follow each track's 68 landmarks from frame to frame. Images are
``(H, W) uint8`` grey; points ``(K, 2)`` float pixel coordinates ``(x, y)``; motions are float64.
"""

from __future__ import annotations

import numpy as np

from stages.occluders import inter_ocular

LK_WINDOW = (21, 21)  # pyramidal Lucas-Kanade: search window (px) and pyramid levels
LK_LEVELS = 3
FB_MAX_ERROR = 0.5  # px, or 1 % of the eye distance if larger: forward-backward error above it = no flow


def landmark_flow(
    prev_gray: np.ndarray, gray: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Optical flow of ``points (K, 2)`` from ``prev_gray`` to ``gray`` (``(H, W) uint8``).

    Pyramidal Lucas-Kanade forwards, then backwards from where the points landed; a point's motion is kept
    only when both directions succeed and it returns within ``FB_MAX_ERROR``. Returns the motion
    ``(K, 2) float64`` and ``(K,) bool`` for the points that passed.
    """
    import cv2

    p0 = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 1, 2)
    args = {"winSize": LK_WINDOW, "maxLevel": LK_LEVELS, "criteria": (3, 30, 0.01)}
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, p0, None, **args)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, p1, None, **args)
    p0, p1, back = p0.reshape(-1, 2), p1.reshape(-1, 2), back.reshape(-1, 2)
    ok = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & round_trip_ok(p0, p1, back, gray.shape)
    return (p1 - p0).astype(np.float64), ok


def round_trip_ok(p0: np.ndarray, p1: np.ndarray, back: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(K,) bool``: points ``p0 (K, 2)`` that moved to ``p1`` inside the ``(H, W)`` image and whose
    backward flow from there lands at ``back`` within ``FB_MAX_ERROR`` px (or 1 % of the eye distance, for
    68 landmarks or a detector's 5 points, whose first two are the eyes)."""
    h, w = shape
    eye = inter_ocular(p0) if len(p0) == 68 else float(np.linalg.norm(p0[0] - p0[1])) if len(p0) == 5 else 0.0
    return (
        (np.linalg.norm(back - p0, axis=1) <= max(FB_MAX_ERROR, 0.01 * eye))
        & (p1[:, 0] >= 0)
        & (p1[:, 1] >= 0)
        & (p1[:, 0] <= w - 1)
        & (p1[:, 1] <= h - 1)
    )


# Dense landmark flow (smooth.flow=dis): OpenCV DIS on a crop around the points (their extent grown by
# DIS_GROW on each side), the medium preset with fewer iterations. Measured on the 11 talking-head cuts
# (landmark track motion against full-frame DIS medium flow of the original, IOD; ms per frame and face,
# two flows, 480-512 px frames): medium 0.00424 / 22 ms; this setting 0.00444 / 7 ms; the crop scaled to
# 40 px between the eyes 0.00550; the fast preset 0.0082; Lucas-Kanade at the points 0.00612 / 1.5 ms.
DIS_GROW = 0.1
DIS_MIN_SIZE = 16  # px: a smaller crop (a face leaving the frame) gets no flow
DIS_SETTINGS = {"PatchStride": 4, "GradientDescentIterations": 8, "VariationalRefinementIterations": 3}


def dense_landmark_flow(
    prev_gray: np.ndarray, gray: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Optical flow of ``points (K, 2)`` from ``prev_gray`` to ``gray`` (``(H, W) uint8``), from dense flow.

    DIS flow of a crop around the points, forwards and backwards, sampled bilinearly at the points; a
    point's motion passes as in :func:`landmark_flow` (back within ``FB_MAX_ERROR``, landing inside).
    Dense flow follows the lips and chin where Lucas-Kanade's 21 px windows, which straddle the opening
    mouth, fail their check (13-18 % of steps on the talking heads). Returns ``(K, 2) float64`` motion and
    ``(K,) bool``.
    """
    import cv2

    p0 = np.asarray(points, dtype=np.float64)
    h, w = gray.shape
    lo, hi = p0.min(0), p0.max(0)
    grow = DIS_GROW * (hi - lo)
    c1, r1 = np.clip(np.floor(lo - grow), 0, [w, h]).astype(int)
    c2, r2 = np.clip(np.ceil(hi + grow) + 1, 0, [w, h]).astype(int)
    if c2 - c1 < DIS_MIN_SIZE or r2 - r1 < DIS_MIN_SIZE:  # (nearly) outside the frame: no flow
        return np.zeros_like(p0), np.zeros(len(p0), bool)
    a = np.ascontiguousarray(prev_gray[r1:r2, c1:c2])
    b = np.ascontiguousarray(gray[r1:r2, c1:c2])
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for name, value in DIS_SETTINGS.items():
        getattr(dis, "set" + name)(value)
    forward = dis.calc(a, b, None)
    backward = dis.calc(b, a, None)

    def at(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
        m = (pts - [c1, r1]).astype(np.float32)
        v = cv2.remap(field, m[:, 0:1], m[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return v[:, 0].astype(np.float64)

    motion = at(forward, p0)
    p1 = p0 + motion
    return motion, round_trip_ok(p0, p1, p1 + at(backward, p1), gray.shape)
