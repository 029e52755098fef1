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
    cuts: ``(N,) bool`` scene cut at each frame (:class:`stages.scene.SceneCuts`), or None until the first
        stage that needs them computes them; the later stages read them from here.
    """

    video_id: str
    indices: np.ndarray
    pts: np.ndarray
    frames: np.ndarray
    faces: list[list[FaceRecord]] = field(default_factory=list)
    cuts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.faces:
            self.faces = [[] for _ in range(len(self.indices))]
        if not (len(self.indices) == len(self.pts) == len(self.frames) == len(self.faces)):
            raise ValueError("FrameBatch fields disagree in length")
        if self.cuts is not None and len(self.cuts) != len(self.indices):
            raise ValueError("FrameBatch cuts disagree in length with its frames")

    def __len__(self) -> int:
        return len(self.indices)

    def writable(self) -> FrameBatch:
        """Return self with frames that can be written to (object-store arrays are read-only)."""
        if not self.frames.flags.writeable:
            self.frames = self.frames.copy()
        return self


def swap_groups(batch: FrameBatch) -> list[tuple[list[FaceRecord], np.ndarray, np.ndarray]]:
    """What a swap stage works on: the selected faces the align stage prepared, grouped by crop side.

    The align stage cuts a face small in the frame to a smaller crop (``align.min_crop_size``), so a batch
    can hold several sides. Returns groups of one side each: the faces (in frame order), their crops
    ``(F, S, S, 3) uint8`` RGB and their 68 landmarks in crop pixels ``(F, 68, 2) float32``. Stages keep
    state along tracks, face after face in frame order; so when a track's side changes, the frames from
    there on start new groups: a stage that runs the groups in the order given meets every track's faces
    in frame order.
    """
    from stages.geometry import transform_points

    runs: list[dict[int, list[FaceRecord]]] = [{}]
    side_of_track: dict[int, int] = {}
    for frame_faces in batch.faces:
        ready = [
            f
            for f in frame_faces
            if f.selected and f.crop is not None and f.landmarks68 is not None and f.affine is not None
        ]
        sides = [int(f.crop.shape[0]) for f in ready]
        if any(f.track_id >= 0 and side_of_track.get(f.track_id, s) != s for f, s in zip(ready, sides)):
            runs.append({})
            side_of_track = {}
        for f, s in zip(ready, sides):
            runs[-1].setdefault(s, []).append(f)
            side_of_track[f.track_id] = s
    groups = []
    for run in runs:
        for side in sorted(run):
            faces = run[side]
            crops = np.stack([f.crop for f in faces])
            landmarks = np.stack([transform_points(f.landmarks68, f.affine) for f in faces])
            groups.append((faces, crops, landmarks))
    return groups


def swap_inputs(batch: FrameBatch, size: int) -> tuple[list[FaceRecord], np.ndarray, np.ndarray]:
    """:func:`swap_groups` for a stage that needs one crop side: the faces, their crops
    ``(F, size, size, 3) uint8`` RGB and 68 landmarks in crop pixels ``(F, 68, 2) float32``. Raises
    ValueError when a crop has another size (mismatched configs).
    """
    groups = swap_groups(batch)
    if not groups:
        return [], np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 68, 2), np.float32)
    for _, crops, _ in groups:
        if crops.shape[1:] != (size, size, 3):
            raise ValueError(
                f"aligned crop is {crops.shape[1:]} but align.crop_size is {size}: "
                "run the align stage with the same config as the swap stage"
            )
    return groups[0]  # one side: one group (groups split only where a track's side changes)
