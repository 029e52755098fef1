"""Tracker ids and target selection on synthetic boxes and on a real clip."""

from __future__ import annotations

import numpy as np

from stages.track import TrackStage, iou_matrix
from stages.types import FaceRecord, FrameBatch


def face(x: float, y: float, size: float) -> FaceRecord:
    return FaceRecord(np.array([x, y, x + size, y + size], np.float32), 0.99, np.zeros((5, 2), np.float32))


def batch_of(per_frame: list[list[FaceRecord]], start: int = 0, vid: str = "v") -> FrameBatch:
    n = len(per_frame)
    idx = np.arange(start, start + n)
    return FrameBatch(vid, idx, idx, np.zeros((n, 4, 4, 3), np.uint8), per_frame)


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    assert np.allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


def test_ids_stable_across_batches_and_new_faces_get_new_ids(base_cfg):
    tracker = TrackStage(base_cfg)
    frames = [[face(10 + 2 * t, 10, 50), face(200 - 2 * t, 20, 60)] for t in range(20)]
    frames += [[face(50, 10, 50), face(160, 20, 60), face(400, 300, 40)]]
    b1, b2 = batch_of(frames[:8]), batch_of(frames[8:], start=8)
    tracker(b1)
    tracker(b2)
    ids = [[f.track_id for f in fr] for fr in b1.faces + b2.faces]
    assert all(fr[:2] == [0, 1] for fr in ids)
    assert ids[-1][2] == 2
    assert all(f.selected for fr in b1.faces + b2.faces for f in fr)


def test_largest_target_is_sticky(base_cfg):
    cfg = {**base_cfg, "swap": {**base_cfg["swap"], "target": "largest"}}
    tracker = TrackStage(cfg)
    # Track A starts larger; B grows past it later: the swap stays on A while A lives, then moves to B.
    frames = [[face(0, 0, 80), face(300, 0, 60 + 5 * t)] for t in range(10)]
    frames += [[face(300, 0, 110)] for _ in range(3)]
    b = tracker(batch_of(frames))
    assert [next(f.track_id for f in fr if f.selected) for fr in b.faces] == [0] * 10 + [1] * 3
    assert all(sum(f.selected for f in fr) == 1 for fr in b.faces)


def test_tracks_are_kept_per_video(base_cfg):
    tracker = TrackStage(base_cfg)
    a = tracker(batch_of([[face(0, 0, 50)]], vid="a"))
    b = tracker(batch_of([[face(300, 300, 50)]], vid="b"))
    assert a.faces[0][0].track_id == 0 and b.faces[0][0].track_id == 0


def test_track_ids_stable_across_a_real_clip(data_dir, base_cfg):
    """One talking head: every frame's face continues the same track from first frame to last."""
    from pipeline.executors import LocalExecutor, StageSpec
    from stages.decode import read_batches
    from stages.detect import DetectStage

    ids: list[list[int]] = []
    executor = LocalExecutor(
        [StageSpec("detect", DetectStage, (base_cfg,)), StageSpec("track", TrackStage, (base_cfg,))]
    )
    executor.run(
        read_batches(data_dir / "videos" / "retalking_face_5.mp4", 16),
        lambda b: ids.extend([f.track_id for f in faces] for faces in b.faces),
    )
    assert len(ids) == 122
    assert all(frame_ids == [0] for frame_ids in ids)
