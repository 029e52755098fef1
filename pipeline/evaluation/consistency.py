"""Identity consistency: how steady the swapped identity is within a video, and how alike across targets.

Pure math on identity embeddings, i.e. what :meth:`pipeline.evaluation.scorer.FaceScorer.embedding` gives
per face: dlib's ``(128,) float64`` descriptor (not unit length, about 1.4) or an ArcFace ``(512,) float32``
unit vector. Every measure here is a cosine similarity, so the length of the vectors does not matter; rows
are L2-normalised first (a zero row stays zero and has similarity 0 to everything). Cosines are in [-1, 1],
1 = the same direction. :func:`pipeline.evaluation.networks.cosine_distance` is the two-vector form
(``1 - cos``) that the ArcFace scorer uses as its distance.

Scale: the numbers depend on the identity network. dlib's descriptors all lie in one cone: on the shared
face photos, two photos of one person (6 pairs) were at cosine 0.94-0.98 and photos of different people
(60 pairs) at 0.75-0.88 (mean 0.81), so with dlib a "steadiness" of 0.81 is what a different person in
every frame gives, not 0. Compare a video's values with its original's (``*_original``), which the
evaluator reports next to them.

(a) Within one output video (:func:`within_video`), over the F frames where both the original's face and
the output's face were found, with unit embeddings o_t (output), g_t (original) and s (source):
- ``steadiness``: mean pairwise cosine of the output's o_t over all pairs t < t',
  ``(|sum_t o_t|^2 - F) / (F (F - 1))``; 1.0 = the same embedding in every frame.
- ``steadiness_original``: the same of the original's g_t: how much the target's own face varies with pose,
  light and expression; a copy of the original has exactly this steadiness.
- ``source_similarity``: mean, std (population) and range (max - min) over frames of o_t . s; the spread
  says how much the resemblance to the source comes and goes. ``source_similarity_original``: the same of
  g_t . s.
- ``source_shift``: mean over frames of o_t . s - g_t . s; 0 = the identity did not move towards the
  source, positive = it did (at most 2).
- ``original_similarity``: mean over frames of o_t . g_t; 1 = the output's face is the original's.

(b) Across targets (:func:`cross_target`): each output video v of one source gets its mean direction
m_v = mean_t o_t / |mean_t o_t| (:func:`mean_direction`); a source with two or more outputs gets the mean
pairwise cosine of its m_v; the value is the mean over those sources (N = their number). 1.0 = the source
looks the same on every target; a swap that keeps each target's identity scores what the targets
themselves score (the same formula on their originals' mean directions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """``(F, D)`` (or ``(D,)``) embeddings of any float dtype → the same shape, float64, each row of
    length 1 (zero rows stay zero)."""
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=-1, keepdims=True)
    return e / np.maximum(norms, 1e-12)


def mean_pairwise_cosine(embeddings: np.ndarray) -> float | None:
    """Mean cosine similarity over all pairs of rows of ``embeddings (F, D)`` (L2-normalised or not), in
    [-1, 1]; None for fewer than 2 rows. Computed from the sum of the unit rows, O(F D)."""
    u = unit_rows(embeddings)
    f = len(u)
    if u.ndim != 2 or f < 2:
        return None
    total = u.sum(axis=0)
    own = float((u * u).sum())  # F, less the zero rows
    return float((total @ total - own) / (f * (f - 1)))


def cosine_to(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``embeddings (F, D)`` to ``reference (D,)``: ``(F,) float64``."""
    return unit_rows(embeddings) @ unit_rows(reference)


def spread(values: np.ndarray) -> dict[str, float | None]:
    """``{"mean", "std", "range"}`` of ``values (F,)``: mean, population std, max - min (None when empty)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "range": None}
    return {"mean": float(v.mean()), "std": float(v.std()), "range": float(v.max() - v.min())}


def within_video(output: np.ndarray, original: np.ndarray, source: np.ndarray) -> dict:
    """Measures (a) of the module doc for one video.

    output, original: ``(F, D)`` per-frame embeddings of the output's and the original's face in the same F
    frames (row t of both from frame t); source: ``(D,)`` the source photo's embedding. Any float dtype,
    L2-normalised or not. Returns a JSON-able dict (values None when F is too small).
    """
    out = np.asarray(output, dtype=np.float64).reshape(-1, np.shape(source)[-1])
    orig = np.asarray(original, dtype=np.float64).reshape(-1, np.shape(source)[-1])
    if out.shape != orig.shape:
        raise ValueError(f"output {out.shape} and original {orig.shape} embeddings must pair frame by frame")
    sim_out, sim_orig = cosine_to(out, source), cosine_to(orig, source)
    return {
        "frames": len(out),
        "steadiness": mean_pairwise_cosine(out),
        "steadiness_original": mean_pairwise_cosine(orig),
        "source_similarity": spread(sim_out),
        "source_similarity_original": spread(sim_orig),
        "source_shift": float(np.mean(sim_out - sim_orig)) if len(out) else None,
        "original_similarity": (
            float(np.mean((unit_rows(out) * unit_rows(orig)).sum(axis=1))) if len(out) else None
        ),
    }


def mean_direction(embeddings: np.ndarray) -> np.ndarray | None:
    """Unit mean direction ``(D,) float64`` of the unit rows of ``embeddings (F, D)``; None when F = 0 or
    the rows cancel out."""
    u = unit_rows(embeddings)
    if u.ndim != 2 or len(u) == 0:
        return None
    mean = u.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 1e-12 else None


def cross_target(groups: Mapping[str, Sequence[np.ndarray]]) -> dict:
    """Measure (b) of the module doc: ``groups`` maps a source id to the ``(D,)`` mean directions of its
    output videos (one per target). Sources with fewer than 2 are left out.

    Returns ``{"mean": mean over sources or None, "sources": N, "outputs": outputs of those N sources,
    "per_source": {id: mean pairwise cosine}}``.
    """
    per_source = {
        key: mean_pairwise_cosine(np.stack([np.asarray(m, dtype=np.float64) for m in means]))
        for key, means in groups.items()
        if len(means) >= 2
    }
    values = [v for v in per_source.values() if v is not None]
    return {
        "mean": float(np.mean(values)) if values else None,
        "sources": len(per_source),
        "outputs": sum(len(groups[k]) for k in per_source),
        "per_source": per_source,
    }
