"""Scene cuts: a shot-change detector for stages that must not carry state across a cut (e.g. smoothing).

Each frame is reduced to a small joint HSV colour histogram (frames are subsampled to about
``_TARGET_SIDE`` pixels on the short side first, so a 720p frame costs well under a millisecond); the
distance between two frames is the total-variation distance between their histograms, in [0, 1]
(0: same colour distribution, 1: disjoint). Frame ``i`` is a cut when its distance to frame ``i - 1`` of
the same video exceeds ``scene.threshold``.

Config (``scene`` section; default in configs/default.yaml):
    scene.threshold: 0.2   cut when the histogram distance to the previous frame is above this.
                           Measured (8x4x4 HSV, TV distance): hamilton_short_clip.mp4 has three real cuts,
                           frames 20, 82 and 211 (the stage → audience cut, about 7 s in), at 0.302, 0.308
                           and 0.473; its other frames at most 0.072. liveportrait_d20.mp4 at most 0.082,
                           crowd_walking_facenet.mp4 at most 0.055. Cost about 1-2 ms a frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.runtime import check_shape
from stages.types import FrameBatch

_TARGET_SIDE = 64  # frames are subsampled (strided) to about this many pixels on the short side
_H_BINS, _S_BINS, _V_BINS = 8, 4, 4


def _subsample(frame: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` → strided ``(h, w, 3) uint8`` with ``min(h, w)`` about ``_TARGET_SIDE``."""
    step = max(1, min(frame.shape[0], frame.shape[1]) // _TARGET_SIDE)
    return frame[::step, ::step]


def frame_histogram(frame: np.ndarray) -> np.ndarray:
    """Normalised joint HSV histogram of an ``(H, W, 3) uint8`` RGB frame → ``(8 * 4 * 4,) float64``.

    Hue has 8 bins, saturation and value 4 each; the frame is subsampled first.
    """
    check_shape(frame, ("H", "W", 3), "frame", note="RGB")
    rgb = _subsample(frame).reshape(-1, 3).astype(np.float64) / 255.0
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = rgb.max(axis=1)
    c = v - rgb.min(axis=1)
    s = np.where(v > 0, c / np.maximum(v, 1e-12), 0.0)
    safe_c = np.maximum(c, 1e-12)
    h = np.where(
        v == r,
        ((g - b) / safe_c) % 6.0,
        np.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0),
    )
    h = np.where(c > 0, h / 6.0, 0.0)  # [0, 1)
    hi = np.minimum((h * _H_BINS).astype(np.int64), _H_BINS - 1)
    si = np.minimum((s * _S_BINS).astype(np.int64), _S_BINS - 1)
    vi = np.minimum((v * _V_BINS).astype(np.int64), _V_BINS - 1)
    codes = (hi * _S_BINS + si) * _V_BINS + vi
    hist = np.bincount(codes, minlength=_H_BINS * _S_BINS * _V_BINS).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def _hist_distance(ha: np.ndarray, hb: np.ndarray) -> float:
    return float(0.5 * np.abs(ha - hb).sum())


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance in [0, 1] between the HSV histograms of two ``(H, W, 3) uint8`` RGB frames."""
    return _hist_distance(frame_histogram(a), frame_histogram(b))


class SceneCuts:
    """Marks scene cuts in the frames of each video, fed in order.

    ``feed(video_id, frames)`` takes the next ``(N, H, W, 3) uint8`` frames of a video and returns
    ``(N,) bool``: True where a frame differs from the frame before it (possibly in an earlier call) by more
    than ``scene.threshold``. The first frame of a video is never a cut. ``last_distances`` holds the
    ``(N,) float64`` distances of the last call (NaN for a video's first frame).
    """

    def __init__(self, cfg: dict | None = None, threshold: float | None = None) -> None:
        if threshold is None:
            if cfg is None:
                raise ValueError("SceneCuts needs a config with scene.threshold or an explicit threshold")
            threshold = cfg["scene"]["threshold"]
        self.threshold = float(threshold)
        self._prev: dict[str, np.ndarray] = {}
        self.last_distances = np.zeros(0, np.float64)

    def distances(self, video_id: str, frames: np.ndarray) -> np.ndarray:
        """Distances ``(N,) float64`` of each frame to its predecessor; advances the video's state."""
        out = np.full(len(frames), np.nan, np.float64)
        prev = self._prev.get(video_id)
        for i, frame in enumerate(frames):
            hist = frame_histogram(frame)
            if prev is not None:
                out[i] = _hist_distance(prev, hist)
            prev = hist
        if prev is not None:
            self._prev[video_id] = prev
        self.last_distances = out
        return out

    def feed(self, video_id: str, frames: np.ndarray) -> np.ndarray:
        """Cut flags ``(N,) bool`` for the next frames ``(N, H, W, 3) uint8`` of ``video_id``."""
        d = self.distances(video_id, frames)
        return np.nan_to_num(d, nan=0.0) > self.threshold

    def of(self, batch: FrameBatch) -> np.ndarray:
        """Cut flags ``(N,) bool`` of the batch's frames: ``batch.cuts`` when a stage before computed them
        (the frames are the same, so are the cuts), else :meth:`feed` here, kept in ``batch.cuts``.

        Either way the video's last frame is remembered, so a later batch without cuts is still measured
        against the frame before it. One histogram a frame for the whole pipeline, not one per stage.
        """
        if batch.cuts is None:
            batch.cuts = self.feed(batch.video_id, batch.frames)
        elif len(batch):
            self._prev[batch.video_id] = frame_histogram(batch.frames[-1])
        return batch.cuts

    def end_video(self, video_id: str) -> None:
        """Forget a finished video."""
        self._prev.pop(video_id, None)


class TrackMemory:
    """What a filter along each track carries from one frame to the next, per (video, track id).

    :meth:`previous` gives the value stored for the frame just before, or None where the filter must start
    afresh: an untracked face (track id < 0), a new track, a gap in the track or a scene cut at this frame.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], tuple[int, Any]] = {}

    def previous(self, video_id: str, track_id: int, frame: int, cut: bool) -> Any | None:
        """The value stored for ``frame - 1`` of this track, or None (see the class doc)."""
        if track_id < 0 or cut:
            return None
        last = self._last.get((video_id, int(track_id)))
        return last[1] if last is not None and last[0] == frame - 1 else None

    def store(self, video_id: str, track_id: int, frame: int, value: Any) -> None:
        """Remember ``value`` for ``frame`` of a tracked face (untracked faces keep nothing)."""
        if track_id >= 0:
            self._last[(video_id, int(track_id))] = (int(frame), value)

    def smooth(self, video_id: str, track_id: int, frame: int, cut: bool, value: Any, a: float) -> Any:
        """An exponential filter along the track: ``a * previous + (1 - a) * value`` where :meth:`previous`
        has one, else ``value``; the result is stored for the next frame and returned."""
        prev = self.previous(video_id, track_id, frame, cut)
        out = value if prev is None else a * prev + (1.0 - a) * value
        self.store(video_id, track_id, frame, out)
        return out

    def smooth_rows(
        self, video_id: str, track_ids: list[int], frames: list[tuple[int, bool]], values: Any, a: float
    ) -> Any:
        """:meth:`smooth` of each row of ``values`` ``(F, D)`` (a tensor) along its track: ``track_ids``
        and ``frames`` (frame number, scene cut there) per row. Returns the smoothed rows, concatenated."""
        import torch

        rows = [
            self.smooth(video_id, t, frame, cut, values[k : k + 1], a)
            for k, (t, (frame, cut)) in enumerate(zip(track_ids, frames))
        ]
        return torch.cat(rows)

    def forget_before(self, video_id: str, frame: int) -> None:
        """Drop the video's tracks last seen before ``frame - 1``: they can only start afresh."""
        for key in [k for k, (f, _) in self._last.items() if k[0] == video_id and f < frame - 1]:
            del self._last[key]

    def clear(self) -> None:
        self._last.clear()
