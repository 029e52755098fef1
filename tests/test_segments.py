"""Long videos in parts: the plan, reading a frame range, the order-free frame digest, and a run stopped in
the middle of a segment. (Segmented = unsegmented on a real clip with Ray: tests/test_end_to_end.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.segments import FrameDigest, look_ahead_frames, plan, run_in_frames, segment_count
from stages.decode import frame_table, probe, read_batches, read_range
from stages.types import FrameBatch

KATIE = "sadtalker_WDA_KatieHill_000.mp4"  # 200 frames, a keyframe every 12


def test_plan_covers_every_frame_once_with_run_in_and_run_out():
    segments = plan(200, 3, run_in=59, look_ahead=10)
    assert [(s.start, s.end) for s in segments] == [(0, 67), (67, 133), (133, 200)]
    assert [(s.first, s.last) for s in segments] == [(0, 77), (8, 143), (74, 200)]
    assert [s.number for s in segments] == [0, 1, 2]
    assert len(plan(100, 3, run_in=59, look_ahead=10)) == 1  # a part would own fewer frames than its run-in
    assert len(plan(10_000, 8, run_in=59, look_ahead=10)) == 8


def test_run_in_lets_the_track_filters_settle():
    cfg = load_config()
    a, r = cfg["classic"]["color_smoothing"], cfg["mask"]["release"]
    # the filters settle only once their inputs (the smoothed landmarks) are the unsegmented run's: after
    # the detector's first keyframe (faces carried before it may differ) and the smoothing's look-back
    look_back = look_ahead_frames(cfg) + cfg["detect"]["every"]
    k = run_in_frames(cfg) - look_back
    assert a**k <= 2.0**-30 < a ** (k - 1) and r**k <= 2.0**-30
    assert cfg["classic"]["shape_smoothing"] ** k <= 2.0**-30
    slow_shape = load_config(None, ["classic.shape_smoothing=0.9"])
    slow_k = run_in_frames(slow_shape) - look_back
    assert slow_k > k and 0.9**slow_k <= 2.0**-30
    assert look_ahead_frames(cfg) == cfg["smooth"]["window"] // 2 + cfg["smooth"]["max_gap"]
    no_smoothing = load_config(None, ["smooth.enabled=false"])
    assert run_in_frames(no_smoothing) == k + cfg["detect"]["every"]
    every_frame = load_config(None, ["detect.every=1"])
    assert run_in_frames(every_frame) == run_in_frames(cfg) - cfg["detect"]["every"] + 1
    still = load_config(
        None,
        [
            "classic.color_smoothing=0",
            "classic.shape_smoothing=0",
            "mask.release=0",
            "smooth.enabled=false",
            "detect.every=1",
        ],
    )
    assert look_ahead_frames(still) == 0 and run_in_frames(still) == 1


def test_segment_count_follows_parts_or_length(data_dir):
    info = probe(data_dir / "videos" / KATIE)  # 25 frames/s
    assert segment_count(load_config(None, ["segments.parts=3"]), info, 200) == 3
    assert segment_count(load_config(None, ["executor=ray"]), info, 200) == 1  # 8 s: far below 2 x 300 s
    ray_10s = load_config(None, ["executor=ray", "segments.seconds=2"])
    assert segment_count(ray_10s, info, 200) == 4
    assert segment_count(load_config(None, ["executor=local", "segments.seconds=2"]), info, 200) == 1
    assert segment_count(load_config(None, ["executor=ray", "segments.seconds=0"]), info, 200) == 1


def test_read_range_gives_the_frames_of_the_whole_read(data_dir):
    path = data_dir / "videos" / KATIE
    table = frame_table(path)
    whole = list(read_batches(path, 16))
    frames = np.concatenate([b.frames for b in whole])
    pts = np.concatenate([b.pts for b in whole])
    assert len(table) == len(frames) == 200
    assert np.array_equal(table.pts, pts)
    assert np.array_equal(table.keyframes, np.arange(0, 200, 12))
    for first, stop in ((0, 20), (30, 75), (190, 200)):  # 30: decoding starts at keyframe 24
        part = list(read_range(path, 16, first, stop, table, video_id="v"))
        assert [len(b) for b in part][:-1] == [16] * (len(part) - 1)
        assert np.array_equal(np.concatenate([b.indices for b in part]), np.arange(first, stop))
        assert np.array_equal(np.concatenate([b.pts for b in part]), pts[first:stop])
        assert np.array_equal(np.concatenate([b.frames for b in part]), frames[first:stop])


def test_frame_digest_does_not_depend_on_arrival_order():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)

    def batch(a: int, b: int, f: np.ndarray = frames) -> FrameBatch:
        idx = np.arange(a, b)
        return FrameBatch("v", idx, idx, f[a:b])

    in_order, shuffled, changed = FrameDigest(), FrameDigest(), FrameDigest()
    for a, b in ((0, 4), (4, 9), (9, 12)):
        in_order.update(batch(a, b))
    for a, b in ((9, 12), (0, 4), (4, 9)):
        shuffled.update(batch(a, b))
    other = frames.copy()
    other[5, 0, 0, 0] ^= 1
    for a, b in ((0, 4), (4, 9), (9, 12)):
        changed.update(batch(a, b, other))
    assert in_order.hexdigest() == shuffled.hexdigest() != changed.hexdigest()


@pytest.mark.slow
def test_interrupted_segment_leaves_no_output_and_no_parts(data_dir, tmp_path, monkeypatch):
    """Ctrl-C while the second of two segments runs (the first is already encoded): the output does not
    appear, and neither the segment files nor their folder are left behind."""
    import pipeline.run as run_module
    from pipeline.executors import StageSpec
    from tests.media_making import cut_360p
    from tests.stage_fixtures import InterruptAt

    clip = tmp_path / "clip.mp4"
    cut_360p(data_dir / "videos" / KATIE, clip, 2.0)  # 50 frames
    build_specs = run_module.build_specs

    def stopping_at_40(cfg, source):
        return [StageSpec("stop", InterruptAt, (40,)), *build_specs(cfg, source)]

    monkeypatch.setattr(run_module, "build_specs", stopping_at_40)
    cfg = load_config(
        None, ["executor=local", "segments.parts=2", "classic.color_smoothing=0", "mask.release=0"]
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        run_module.swap_video(clip, data_dir / "faces" / "biden_b.jpg", tmp_path / "o.mp4", cfg, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _write_part(path, info, cfg, first: int, n: int, size: tuple[int, int]):
    from stages.encode import VideoWriter

    rng = np.random.default_rng(first)
    frames = rng.integers(0, 256, size=(n, size[1], size[0], 3), dtype=np.uint8)
    idx = np.arange(first, first + n)
    writer = VideoWriter(path, info, cfg, "test", audio=False)
    writer.write(FrameBatch("v", idx, idx * 512, frames))
    writer.close()


def test_join_copies_the_parts_packets_in_order_and_refuses_parts_that_differ(tmp_path):
    from fractions import Fraction

    import av

    from stages.decode import VideoInfo
    from stages.encode import join_segments

    cfg = load_config()
    info = VideoInfo(str(tmp_path / "none.mp4"), 64, 48, Fraction(1, 12800), Fraction(25), 0, 30, "h264", 0)
    parts = [tmp_path / f"p{k}.mp4" for k in range(3)]
    for k, part in enumerate(parts):
        _write_part(part, info, cfg, 10 * k, 10, (64, 48))
    out = join_segments(parts, info, tmp_path / "joined.mp4", "test")
    with av.open(str(out)) as c:
        assert [f.pts for f in c.decode(c.streams.video[0])] == [512 * i for i in range(30)]
        assert "synthetic" in c.metadata.get("synthetic", "")
    odd = tmp_path / "odd.mp4"
    _write_part(odd, VideoInfo(**{**info.__dict__, "width": 32, "height": 48}), cfg, 10, 10, (32, 48))
    with pytest.raises(RuntimeError, match="cannot be joined"):
        join_segments([parts[0], odd], info, tmp_path / "bad.mp4", "test")
    assert not any(p.name.startswith((".bad", "bad")) for p in tmp_path.iterdir())
