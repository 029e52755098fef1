"""Expression against the original, from dlib's 68 landmarks: Procrustes shape error, mouth and eye opening.

All landmark sets are ``(68, 2)`` pixel points in iBUG 300-W order; errors are in inter-ocular distances
(IOD) of the original.
"""

from __future__ import annotations

import numpy as np

from stages.occluders import inter_ocular

# Landmarks that carry expression: brows 17-26, eyes 36-47, mouth 48-67 (iBUG 300-W order).
EXPRESSION_LANDMARKS = np.r_[17:27, 36:48, 48:68]


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
