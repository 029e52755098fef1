"""Track: associate faces across frames (IoU with the previous frame) and choose which faces to swap."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.types import FaceRecord, FrameBatch


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a (K, 4)`` against ``b (M, 4)`` (x1, y1, x2, y2) → ``(K, M) float32``."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


@dataclass
class _VideoState:
    prev_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    prev_ids: list[int] = field(default_factory=list)
    next_id: int = 0
    chosen: int | None = None  # the track swapped under target=largest


class TrackStage:
    """Gives every face a track id and sets ``selected``.

    A face continues the track of the previous-frame face it overlaps most (greedy by IoU, above
    ``track.iou_threshold``); an unmatched face starts a new track. ``swap.target``: ``all`` selects
    every face; ``largest`` selects one track: the largest face's track when no chosen track is in view,
    kept for as long as that track continues (so the swap does not jump between people).
    State is kept per video id; batches of a video must arrive in order.
    """

    def __init__(self, cfg: dict) -> None:
        self.iou_threshold = float(cfg["track"]["iou_threshold"])
        self.target = cfg["swap"]["target"]
        if self.target not in ("all", "largest"):
            raise ValueError(f"swap.target must be 'all' or 'largest', not {self.target!r}")
        self._state: dict[str, _VideoState] = {}

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        state = self._state.setdefault(batch.video_id, _VideoState())
        for faces in batch.faces:
            self._assign(state, faces)
            self._select(state, faces)
        return batch

    def _assign(self, state: _VideoState, faces: list[FaceRecord]) -> None:
        boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
        ious = iou_matrix(boxes, state.prev_boxes)
        taken_prev: set[int] = set()
        order = np.dstack(np.unravel_index(np.argsort(-ious, axis=None, kind="stable"), ious.shape))[0]
        for i, j in order:
            if ious[i, j] <= self.iou_threshold:
                break
            if faces[i].track_id >= 0 or j in taken_prev:
                continue
            faces[i].track_id = state.prev_ids[j]
            taken_prev.add(int(j))
        for f in faces:
            if f.track_id < 0:
                f.track_id = state.next_id
                state.next_id += 1
        state.prev_boxes = boxes
        state.prev_ids = [f.track_id for f in faces]

    def _select(self, state: _VideoState, faces: list[FaceRecord]) -> None:
        if self.target == "all" or not faces:
            for f in faces:
                f.selected = True
            return
        ids = [f.track_id for f in faces]
        if state.chosen not in ids:
            state.chosen = max(faces, key=lambda f: f.area).track_id
        for f in faces:
            f.selected = f.track_id == state.chosen

    def flush(self) -> list[FrameBatch]:
        return []

    def end_video(self, video_id: str) -> None:
        """Forget a finished video's state."""
        self._state.pop(video_id, None)
