"""Data carried between stages: one batch of consecutive frames of one video.

Conventions used everywhere in swapstream:
- images are numpy ``uint8`` RGB in display orientation, shape ``(H, W, 3)``;
- points are ``float32`` pixel coordinates ``(x, y)`` in the frame they belong to;
- an affine matrix ``(2, 3) float32`` maps frame pixels to aligned-crop pixels
  (``crop = M @ [x, y, 1]``); its inverse pastes the crop back.
Stages add fields to these records; they never reorder or drop frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FaceRecord:
    """One face in one frame.

    box: ``(4,) float32`` x1, y1, x2, y2 in frame pixels.
    score: detector confidence in [0, 1].
    points5: ``(5, 2) float32`` eyes (image-left, image-right), nose tip, mouth corners (left, right).
    landmarks68: ``(68, 2) float32`` iBUG 300-W order, frame pixels, or None before the landmark stage.
    track_id: id of the track this face belongs to (-1 before tracking).
    selected: whether the swap stages should replace this face (set by tracking/target selection).
    affine: ``(2, 3) float32`` frame → aligned crop, set by the align stage.
    crop: ``(S, S, 3) uint8`` RGB aligned crop of the target face, set by the align stage.
    swapped: ``(S, S, 3) uint8`` RGB swapped face in crop coordinates, set by the swap stage.
    mask: ``(S, S) float32`` in [0, 1], paste weight in crop coordinates, set by the swap stage.
    pasted: the blend stage pasted a swapped face here.
    """

    box: np.ndarray
    score: float
    points5: np.ndarray
    landmarks68: np.ndarray | None = None
    track_id: int = -1
    selected: bool = True
    affine: np.ndarray | None = None
    crop: np.ndarray | None = None
    swapped: np.ndarray | None = None
    mask: np.ndarray | None = None
    pasted: bool = False

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass
class FrameBatch:
    """A run of consecutive frames of one video.

    video_id: identifies the video (stateful stages keep state per id).
    indices: ``(N,) int64`` frame numbers in decode order (0-based, consecutive).
    pts: ``(N,) int64`` presentation timestamps in the video stream's time base.
    frames: ``(N, H, W, 3) uint8`` RGB, display orientation.
    faces: one list of FaceRecord per frame.
    """

    video_id: str
    indices: np.ndarray
    pts: np.ndarray
    frames: np.ndarray
    faces: list[list[FaceRecord]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.faces:
            self.faces = [[] for _ in range(len(self.indices))]
        if not (len(self.indices) == len(self.pts) == len(self.frames) == len(self.faces)):
            raise ValueError("FrameBatch fields disagree in length")

    def __len__(self) -> int:
        return len(self.indices)

    def writable(self) -> FrameBatch:
        """Return self with frames that can be written to (object-store arrays are read-only)."""
        if not self.frames.flags.writeable:
            self.frames = self.frames.copy()
        return self
