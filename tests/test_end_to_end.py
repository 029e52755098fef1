"""End to end on real clips: frames, timestamps, audio, tag, untouched background, identity moved."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.run import swap_video
from pipeline.segments import look_ahead_frames, plan, run_in_frames
from stages.detect import DetectStage
from tests.media_checks import audio_packets, decode_all, face_descriptor, psnr_outside, video_times

pytestmark = pytest.mark.slow

CASES = [
    ("liveportrait_d20.mp4", "obama_a.jpg"),
    ("retalking_face_5.mp4", "rose_leslie_a.jpg"),
    ("sadtalker_WDA_KatieHill_000.mp4", "biden_b.jpg"),
]


@pytest.fixture(scope="module")
def swapped(data_dir, tmp_path_factory):
    """Run each case once with the in-process executor: output path and frame digest per video."""
    out_dir = tmp_path_factory.mktemp("e2e")
    cfg = load_config(None, ["executor=local"])
    results = {}
    for video, face in CASES:
        out = out_dir / f"{video}.swapped.mp4"
        summary = swap_video(
            data_dir / "videos" / video, data_dir / "faces" / face, out, cfg, progress=False, digest=True
        )
        assert summary.output == out and out.is_file()
        assert summary.frames_with_face > 0 and summary.faces_swapped >= summary.frames_with_face // 2
        results[video] = (out, summary.frames_digest)
    return results


@pytest.mark.parametrize("video,face", CASES)
def test_container_is_faithful(video, face, swapped, data_dir):
    src, out = data_dir / "videos" / video, swapped[video][0]
    assert video_times(out) == video_times(src)
    a_in = audio_packets(src)
    assert a_in and audio_packets(out) == a_in
    import av

    with av.open(str(out)) as c:
        assert "swapstream" in c.metadata.get("synthetic", "")


@pytest.mark.parametrize("video,face", CASES)
def test_background_untouched_and_identity_moved(video, face, swapped, data_dir, base_cfg):
    from pipeline.run import load_image

    src, out = data_dir / "videos" / video, swapped[video][0]
    every = 12
    originals, outputs = decode_all(src, every), decode_all(out, every)
    assert len(originals) == len(outputs)
    detector = DetectStage(base_cfg)
    source_desc = face_descriptor(load_image(data_dir / "faces" / face))
    assert source_desc is not None
    nearer_source, judged, changed = 0, 0, 0
    for orig, new in zip(originals, outputs):
        boxes = [f.box for f in detector.detect_image(orig)]
        assert psnr_outside(orig, new, boxes, grow=0.25) >= 30.0
        if boxes:
            changed += int(np.abs(orig.astype(int) - new.astype(int)).mean() > 0.5)
        d_new, d_orig = face_descriptor(new), face_descriptor(orig)
        if d_new is None or d_orig is None:
            continue
        judged += 1
        nearer_source += int(np.linalg.norm(d_new - source_desc) < np.linalg.norm(d_new - d_orig))
    assert changed >= len(originals) // 2
    assert judged >= len(originals) // 2
    assert nearer_source > judged / 2, f"swapped face nearer the source in {nearer_source}/{judged} frames"


def test_ray_executor_writes_the_same_frames(swapped, data_dir, tmp_path):
    """Same input, same config: the Ray actors hand the encoder exactly the frames the in-process run did."""
    video, face = CASES[0]
    out = tmp_path / "ray.mp4"
    cfg = load_config(None, ["executor=ray"])
    summary = swap_video(
        data_dir / "videos" / video, data_dir / "faces" / face, out, cfg, progress=False, digest=True
    )
    assert summary.frames == len(video_times(out))
    assert summary.frames_digest == swapped[video][1]


def test_killed_stage_actor_is_restarted_and_the_video_is_identical(
    swapped, data_dir, tmp_path, monkeypatch, capsys
):
    """A stage actor's process is killed (SIGKILL) mid-video on a shared pool: Ray restarts the actor, the
    video runs again from its start, and the encoder gets exactly the undisturbed in-process frames."""
    import pipeline.run as run_module
    from pipeline.executors import StagePool, StageSpec
    from tests.stage_fixtures import CrashOnce

    marker = tmp_path / "crashed"
    build_specs = run_module.build_specs

    def with_crash(cfg, source):
        specs = build_specs(cfg, source)
        at = [s.name for s in specs].index("smooth") + 1
        return [*specs[:at], StageSpec("crash", CrashOnce, (str(marker),)), *specs[at:]]

    monkeypatch.setattr(run_module, "build_specs", with_crash)
    video, face = CASES[0]
    out = tmp_path / "ray.mp4"
    cfg = load_config(None, ["executor=ray", "ray.max_restarts=1", "ray.video_retries=1"])
    pool = StagePool.from_config(cfg)
    try:
        summary = swap_video(
            data_dir / "videos" / video,
            data_dir / "faces" / face,
            out,
            cfg,
            progress=False,
            digest=True,
            pool=pool,
        )
    finally:
        pool.close()
    assert marker.exists(), "the crash stage never ran"
    assert "a stage actor died" in capsys.readouterr().err
    assert summary.frames_digest == swapped[video][1]
    assert summary.frames == len(video_times(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashed", "ray.mp4"]  # no temporary left


def test_parallel_segments_give_the_unsegmented_frames_times_and_audio(swapped, data_dir, tmp_path):
    """KatieHill in segments run at once on Ray (the second starts at frame 100 after its 74-frame run-in;
    three were asked for, but a third part would own fewer frames than its run-in), joined without
    re-encoding: the encoders got exactly the in-process run's frames, and the joined file has its
    timestamps and audio; decoded, it differs from the unsegmented file only by encoding noise."""
    video, face = CASES[2]
    out = tmp_path / "segmented.mp4"
    cfg = load_config(None, ["executor=ray", "segments.parts=3", "ray.concurrent_videos=3"])
    assert len(plan(200, 3, run_in_frames(cfg), look_ahead_frames(cfg))) == 2
    summary = swap_video(
        data_dir / "videos" / video, data_dir / "faces" / face, out, cfg, progress=False, digest=True
    )
    whole = swapped[video][0]
    assert summary.frames == 200 and summary.frames_digest == swapped[video][1]
    assert video_times(out) == video_times(whole) == video_times(data_dir / "videos" / video)
    assert audio_packets(out) == audio_packets(whole)
    for a, b in zip(decode_all(out), decode_all(whole)):
        mse = np.mean((a.astype(np.float64) - b) ** 2)
        assert mse == 0 or 10 * np.log10(255.0**2 / mse) >= 33.0
    assert [p.name for p in tmp_path.iterdir()] == ["segmented.mp4"]  # no segment files left
