"""Temporal smoothing: jitter down, motion kept, cuts kept, short drop-outs bridged, batching irrelevant."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from pipeline.executors import LocalExecutor, RayExecutor, StageSpec
from stages.scene import SceneCuts, TrackMemory, histogram_distance
from stages.smooth import SmoothStage
from stages.types import FaceRecord, FrameBatch
from tests.conftest import VIDEOS

CFG = {
    "smooth": {
        "enabled": True,
        "window": 9,
        "sigma": 2.0,
        "max_gap": 3,
        "flow_weight": 25.0,
        "flow": "lk",
        "curvature_weight": 2.0,
    },
    "scene": {"threshold": 0.2},
}
SCENE_A = np.array([200, 40, 40], np.uint8)
SCENE_B = np.array([20, 60, 220], np.uint8)
BASE68 = np.random.default_rng(1).uniform(-20, 20, size=(68, 2))

# a track's position in a frame: (x, y) offset of the whole face, or None when it is not detected
Track = Callable[[int], np.ndarray | None]


def face_at(offset: np.ndarray, track_id: int) -> FaceRecord:
    """A face whose box, 5 points and 68 landmarks are a fixed shape moved by ``offset (2,)``."""
    centre = np.array([100.0, 80.0]) + offset
    p5 = centre + np.array([[-10, -8], [10, -8], [0, 0], [-8, 10], [8, 10]], np.float64)
    box = np.concatenate([centre - 30, centre + 30])
    return FaceRecord(
        box=box.astype(np.float32),
        score=0.99,
        points5=p5.astype(np.float32),
        landmarks68=(centre + BASE68).astype(np.float32),
        track_id=track_id,
    )


def make_batches(
    n: int, tracks: dict[int, Track], batch: int, cut_at: int | None = None, video_id: str = "v"
) -> Iterator[FrameBatch]:
    """Frames ``(N, 24, 32, 3) uint8`` of one colour, another from ``cut_at`` on (a scene cut)."""
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n), dtype=np.int64)
        frames = np.empty((len(idx), 24, 32, 3), np.uint8)
        faces = []
        for k, i in enumerate(idx):
            frames[k] = SCENE_B if cut_at is not None and i >= cut_at else SCENE_A
            faces.append([face_at(pos, t) for t, fn in tracks.items() if (pos := fn(int(i))) is not None])
        yield FrameBatch(video_id, idx, idx * 512 + 7, frames, faces)


def run_stage(batches: Iterator[FrameBatch], cfg: dict = CFG) -> tuple[SmoothStage, list[FrameBatch]]:
    stage = SmoothStage(cfg)
    out = [stage(b) for b in batches]
    out += stage.flush()
    return stage, [b for b in out if len(b)]


def positions(out: list[FrameBatch], track_id: int) -> dict[int, np.ndarray]:
    """Frame → the track's 5 points ``(5, 2) float32``."""
    return {
        int(i): f.points5
        for b in out
        for i, faces in zip(b.indices, b.faces)
        for f in faces
        if f.track_id == track_id
    }


def noisy_linear(seed: int, noise: float, speed: float = 0.3) -> Track:
    rng = np.random.default_rng(seed)
    jitter = rng.normal(0, noise, size=(1000, 2))
    return lambda i: np.array([speed * i, -0.5 * speed * i]) + jitter[i]


def test_scene_distance_separates_scenes():
    a = np.full((40, 60, 3), SCENE_A, np.uint8)
    b = np.full((40, 60, 3), SCENE_B, np.uint8)
    assert histogram_distance(a, a) == 0.0
    assert histogram_distance(a, b) == pytest.approx(1.0)
    cuts = SceneCuts(CFG)
    assert not cuts.feed("v", np.stack([a, a])).any()
    assert cuts.feed("v", np.stack([b, b, a])).tolist() == [True, False, True]  # state carries across calls


def test_scene_cuts_are_computed_once_and_read_by_the_later_stages(monkeypatch):
    import stages.scene as scene

    a = np.full((40, 60, 3), SCENE_A, np.uint8)
    b = np.full((40, 60, 3), SCENE_B, np.uint8)
    counted = []
    histogram = scene.frame_histogram
    monkeypatch.setattr(scene, "frame_histogram", lambda f: counted.append(1) or histogram(f))

    def batch(first: int, frames: list[np.ndarray]) -> FrameBatch:
        n = len(frames)
        return FrameBatch("v", np.arange(first, first + n), np.arange(first, first + n), np.stack(frames))

    first, later = SceneCuts(CFG), SceneCuts(CFG)
    one = batch(0, [a, a, b])
    assert first.of(one).tolist() == [False, False, True] and one.cuts is not None
    assert later.of(one) is one.cuts and len(counted) == 3 + 1  # the later stage: its last frame only
    two = batch(3, [b, a])  # a batch without cuts: both measure it against the frame before it
    assert later.of(two).tolist() == [False, True]
    assert SceneCuts(CFG).of(batch(3, [a, b])).tolist() == [False, True]  # its first frame is no cut


def test_jitter_reduced_and_linear_motion_kept():
    n = 120
    _, clean = run_stage(make_batches(n, {0: noisy_linear(0, 0.0)}, 16))
    truth = np.stack([face_at(np.array([0.3 * i, -0.15 * i]), 0).points5 for i in range(n)]).astype(
        np.float64
    )
    got = positions(clean, 0)
    smoothed_clean = np.stack([got[i] for i in range(n)])
    assert np.abs(smoothed_clean - truth).max() < 1e-3  # steady motion: no lag, also at the ends

    noisy_in = np.stack([face_at(noisy_linear(0, 1.0)(i), 0).points5 for i in range(n)]).astype(np.float64)
    _, out = run_stage(make_batches(n, {0: noisy_linear(0, 1.0)}, 16))
    got = positions(out, 0)
    smoothed = np.stack([got[i] for i in range(n)]).astype(np.float64)
    jitter_in = np.abs(np.diff(noisy_in - truth, axis=0)).mean()
    jitter_out = np.abs(np.diff(smoothed - truth, axis=0)).mean()
    assert jitter_out < 0.5 * jitter_in, (jitter_in, jitter_out)
    assert abs((smoothed - truth).mean()) < 0.1  # no bias
    assert np.abs(smoothed - truth).mean() < np.abs(noisy_in - truth).mean()


def test_step_at_scene_cut_is_not_smeared():
    def step(i: int) -> np.ndarray:
        return np.array([0.0, 0.0]) if i < 30 else np.array([25.0, 5.0])

    before = face_at(step(0), 0)
    after = face_at(step(30), 0)
    _, out = run_stage(make_batches(60, {0: step}, 16, cut_at=30))
    faces = {int(i): fs for b in out for i, fs in zip(b.indices, b.faces)}
    for i in range(60):
        ref = before if i < 30 else after
        (f,) = faces[i]
        np.testing.assert_allclose(f.points5, ref.points5, atol=1e-4)
        np.testing.assert_allclose(f.landmarks68, ref.landmarks68, atol=1e-4)
        np.testing.assert_allclose(f.box, ref.box, atol=1e-4)
    # control: the same step without a cut in the frames is smoothed across
    _, blended = run_stage(make_batches(60, {0: step}, 16))
    assert np.abs(positions(blended, 0)[29] - before.points5).max() > 1.0


def test_short_dropout_bridged_long_one_not():
    def track(i: int) -> np.ndarray | None:
        if i in (20, 21) or 40 <= i < 50:
            return None
        return np.array([0.5 * i, 0.25 * i])

    stage, out = run_stage(make_batches(70, {3: track}, 16))
    pos = positions(out, 3)
    assert stage.bridged("v") == {(20, 3), (21, 3)}
    for i in (20, 21):
        np.testing.assert_allclose(pos[i], face_at(np.array([0.5 * i, 0.25 * i]), 3).points5, atol=1e-3)
    faces = {int(i): fs for b in out for i, fs in zip(b.indices, b.faces)}
    assert all(f.selected and f.landmarks68 is not None for f in faces[20] + faces[21])
    assert all(faces[i] == [] for i in range(40, 50))
    stage.end_video("v")
    assert stage.bridged("v") == frozenset()


def test_no_bridge_across_a_cut():
    def track(i: int) -> np.ndarray | None:
        return None if i in (29, 30) else np.zeros(2)

    stage, out = run_stage(make_batches(50, {0: track}, 8, cut_at=30))
    assert stage.bridged("v") == frozenset()
    assert sorted(positions(out, 0)) == [i for i in range(50) if i not in (29, 30)]


def scenario(batch: int) -> Iterator[FrameBatch]:
    """Two noisy tracks, drop-outs of 2 and 6 frames, a cut at frame 37, 61 frames."""
    a, b = noisy_linear(2, 1.5), noisy_linear(3, 1.0, speed=-0.2)
    tracks = {
        0: lambda i: None if i in (10, 11) else a(i),
        1: lambda i: None if 44 <= i < 50 else b(i) + 200,
    }
    return make_batches(61, tracks, batch, cut_at=37)


def flatten(out: list[FrameBatch]) -> list[tuple]:
    return [
        (int(i), f.track_id, f.selected, f.box.tobytes(), f.points5.tobytes(), f.landmarks68.tobytes())
        for b in out
        for i, fs in zip(b.indices, b.faces)
        for f in fs
    ]


def test_batches_kept_and_results_independent_of_batch_size():
    results = []
    for size in (1, 3, 16):
        inputs = list(scenario(size))
        grouping = [(b.indices.copy(), b.pts.copy(), b.frames) for b in inputs]
        stage = SmoothStage(CFG)
        out = []
        for b in inputs:
            r = stage(b)
            assert len(r) in (0, len(r.indices))
            out.append(r)
        during = sum(len(b) for b in out)
        assert during < 61  # the look-ahead holds the last frames back
        out = [b for b in out if len(b)] + stage.flush()
        assert len(out) == len(inputs)  # same grouping, every batch, in order
        for b, (idx, pts, frames) in zip(out, grouping):
            assert np.array_equal(b.indices, idx)
            assert np.array_equal(b.pts, pts)
            assert b.frames is frames
        assert stage.flush() == []
        results.append(flatten(out))
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == 61 * 2 - 6 + 0  # 2-frame drop-out bridged, 6-frame one not


def test_lag_and_flush():
    stage = SmoothStage(CFG)
    assert stage.lag == 4 + 3
    sizes = [len(stage(b)) for b in scenario(1)]
    first = sizes.index(1)
    assert first == stage.lag and sum(sizes) == 61 - stage.lag
    assert sum(len(b) for b in stage.flush()) == stage.lag


def test_disabled_passes_through():
    stage = SmoothStage({**CFG, "smooth": {**CFG["smooth"], "enabled": False}})
    batches = list(scenario(16))
    before = flatten(batches)
    assert flatten([stage(b) for b in batches]) == before
    assert stage.flush() == []


def test_out_of_order_batch_is_an_error():
    stage = SmoothStage(CFG)
    batches = list(scenario(8))
    stage(batches[0])
    with pytest.raises(ValueError, match="in order"):
        stage(batches[2])


def run_executor(executor) -> list[FrameBatch]:
    out: list[FrameBatch] = []
    executor.run(scenario(5), out.append)
    return out


def test_local_executor_matches_direct_calls():
    _, direct = run_stage(scenario(16))
    local = run_executor(LocalExecutor([StageSpec("smooth", SmoothStage, (CFG,))]))
    assert [b.indices.tolist() for b in local] == [list(range(s, min(s + 5, 61))) for s in range(0, 61, 5)]
    assert flatten(local) == flatten(direct)


@pytest.mark.slow
def test_ray_executor_matches_local():
    specs = [StageSpec("smooth", SmoothStage, (CFG,))]
    local = run_executor(LocalExecutor(specs))
    executor = RayExecutor(specs, max_in_flight=2)
    try:
        remote = run_executor(executor)
    finally:
        executor.close()
    assert [b.indices.tolist() for b in remote] == [b.indices.tolist() for b in local]
    assert flatten(remote) == flatten(local)


def video_cuts(name: str) -> list[int]:
    from stages.decode import read_batches

    path = VIDEOS / name
    if not path.is_file():
        pytest.fail(f"test media not found: {path}")
    cuts = SceneCuts(CFG)
    found: list[int] = []
    for b in read_batches(path, 16):
        found += [int(i) for i in b.indices[cuts.feed("v", b.frames)]]
    return found


def test_scene_cuts_on_real_videos():
    # hamilton_short_clip.mp4: two cuts early on and the stage → audience cut about 7 s in (frame 211)
    assert video_cuts("hamilton_short_clip.mp4") == [20, 82, 211]
    assert video_cuts("liveportrait_d20.mp4") == []


def textured_batches(n: int, motion: np.ndarray, noise: float, batch: int = 16) -> Iterator[FrameBatch]:
    """A random texture (160x200) whose content moves by ``motion[i] (2,)`` px in frame i (jerky, with
    repeated frames), and one face whose 68 detections follow it with Gaussian noise of ``noise`` px."""
    import cv2

    rng = np.random.default_rng(5)
    base = cv2.GaussianBlur(rng.integers(0, 255, (240, 280, 3), dtype=np.uint8), (0, 0), 2.0)
    detect_noise = rng.normal(0, noise, size=(n, 68, 2))
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n), dtype=np.int64)
        frames = np.empty((len(idx), 160, 200, 3), np.uint8)
        faces = []
        for k, i in enumerate(idx):
            dx, dy = motion[i]
            m = np.array([[1, 0, dx - 40], [0, 1, dy - 40]], np.float64)
            frames[k] = cv2.warpAffine(base, m, (200, 160), flags=cv2.INTER_LINEAR)
            face = face_at(np.array([dx, dy]), 0)
            face.landmarks68 = (face.landmarks68 + detect_noise[i]).astype(np.float32)
            faces.append([face])
        yield FrameBatch("t", idx, idx, frames, faces)


@pytest.mark.parametrize("flow", ["lk", "dis"])
def test_flow_fusion_follows_jerky_motion_and_removes_detection_noise(flow: str):
    """Content that moves in steps with a repeated frame every 5th frame (as liveportrait_d20.mp4 does):
    the flow-fused landmarks follow the real motion frame to frame far better than the raw detections,
    and better than a plain low-pass of them, which smears the steps."""
    n = 60
    steps = np.where(np.arange(n) % 5 == 4, 0.0, 1.0)  # every 5th frame repeats the one before
    wobble = 2.0 * np.sin(np.arange(n) / 2.0)
    motion = np.stack([np.cumsum(steps) + wobble, 0.5 * np.cumsum(steps)], 1)
    truth = np.stack([face_at(m, 0).landmarks68 for m in motion]).astype(np.float64)

    def motion_error(cfg: dict) -> float:
        _, out = run_stage(textured_batches(n, motion, noise=0.8), cfg)
        got = np.stack([f.landmarks68 for b in out for f in (fs[0] for fs in b.faces)]).astype(np.float64)
        return float(np.linalg.norm(np.diff(got - truth, axis=0), axis=2).mean())

    raw = {**CFG, "smooth": {**CFG["smooth"], "enabled": False}}
    lowpass = {**CFG, "smooth": {**CFG["smooth"], "flow_weight": 0.0, "curvature_weight": 0.0}}
    fused = {**CFG, "smooth": {**CFG["smooth"], "flow": flow}}
    e_raw, e_low, e_flow = motion_error(raw), motion_error(lowpass), motion_error(fused)
    assert e_flow < 0.4 * e_raw, (e_raw, e_low, e_flow)
    assert e_flow < 0.6 * e_low, (e_raw, e_low, e_flow)


def test_dense_landmark_flow_follows_non_rigid_motion_and_checks_itself():
    """DIS landmark flow: a textured image whose lower half stretches downwards (a mouth opening) while the
    upper half shifts by (0.6, 0.4) px; the points' motion comes back within 0.1 px on average (0.25 px at
    worst: Lucas-Kanade does as well on this smooth texture, the gain is at real lips); most points whose
    content is replaced by other texture, and of two unrelated frames, fail the forward-backward check."""
    import cv2

    from stages.landmark_flow import dense_landmark_flow

    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.integers(0, 255, (300, 300), dtype=np.uint8), (0, 0), 1.5)
    ys, xs = np.mgrid[0:300, 0:300].astype(np.float32)

    def motion_at(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where content at (x, y) of the first frame is in the second (backward map is its inverse)."""
        stretch = np.clip(y - 150.0, 0.0, None) * 0.04  # 0 above row 150, 4 px at row 250
        return x + 0.6, y + 0.4 + stretch

    # second frame: sample the first at the inverse motion (solved by fixed-point iteration)
    src_x, src_y = xs - 0.6, ys - 0.4
    for _ in range(20):
        mx, my = motion_at(src_x, src_y)
        src_x, src_y = src_x + (xs - mx), src_y + (ys - my)
    second = cv2.remap(base, src_x, src_y, cv2.INTER_LINEAR)
    points = BASE68 * 2.5 + [150.0, 170.0]
    motion, ok = dense_landmark_flow(base, second, points)
    tx, ty = motion_at(points[:, 0], points[:, 1])
    truth = np.stack([tx, ty], 1) - points
    assert ok.mean() > 0.9
    error = np.linalg.norm(motion - truth, axis=1)[ok]
    assert error.mean() < 0.1 and error.max() < 0.25, (error.mean(), error.max())
    other = cv2.GaussianBlur(rng.integers(0, 255, (300, 300), dtype=np.uint8), (0, 0), 1.5)
    patched = second.copy()
    patched[120:200, 120:200] = other[120:200, 120:200]  # an occluder enters
    inside = (np.abs(points - 160.0) < 30.0).all(1)
    _, ok_patched = dense_landmark_flow(base, patched, points)
    assert inside.sum() >= 10 and ok_patched[inside].mean() < 0.35
    _, ok_other = dense_landmark_flow(base, other, points)  # unrelated frames: hardly any motion passes
    assert ok_other.mean() < 0.2


def test_track_memory_restarts_at_gaps_cuts_and_new_tracks():
    """TrackMemory (the colour and occlusion filters' state): a value carries to the next frame of the same
    track of the same video only; a gap, a cut, another track or video, or an untracked face starts afresh."""
    memory = TrackMemory()
    memory.store("a", 0, 10, "s10")
    memory.store("a", -1, 10, "untracked")
    memory.store("b", 0, 10, "other video")
    assert memory.previous("a", 0, 11, cut=False) == "s10"
    assert memory.previous("a", 0, 11, cut=True) is None
    assert memory.previous("a", 0, 12, cut=False) is None  # a gap of one frame
    assert memory.previous("a", 1, 11, cut=False) is None and memory.previous("a", -1, 11, cut=False) is None
    memory.store("a", 0, 11, "s11")
    assert (
        memory.previous("a", 0, 12, cut=False) == "s11"
        and memory.previous("b", 0, 11, cut=False) == "other video"
    )
    memory.forget_before("a", 13)  # frame 11 is before 12 = 13 - 1: gone; video b untouched
    assert (
        memory.previous("a", 0, 12, cut=False) is None
        and memory.previous("b", 0, 11, cut=False) == "other video"
    )
    memory.clear()
    assert memory.previous("b", 0, 11, cut=False) is None
