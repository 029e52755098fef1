"""The assembled stage chain on synthetic frames: frames without a face pass through unchanged."""

from __future__ import annotations

import numpy as np

from pipeline.executors import LocalExecutor
from pipeline.run import build_specs, prepare_source
from stages.types import FrameBatch


def test_frames_without_faces_are_untouched(data_dir, base_cfg):
    source = prepare_source(data_dir / "faces" / "obama_a.jpg", base_cfg)
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, size=(6, 120, 160, 3), dtype=np.uint8)
    frames[3:] = 90  # flat grey frames too
    idx = np.arange(6)
    out: list[FrameBatch] = []
    LocalExecutor(build_specs(base_cfg, source)).run(
        [
            FrameBatch("v", idx[:4], idx[:4] * 2, frames[:4].copy()),
            FrameBatch("v", idx[4:], idx[4:] * 2, frames[4:].copy()),
        ],
        out.append,
    )
    assert np.array_equal(np.concatenate([b.frames for b in out]), frames)
    assert all(not faces for b in out for faces in b.faces)


def test_executor_auto_is_in_process_for_one_short_video_and_ray_otherwise(data_dir, base_cfg, monkeypatch):
    """executor=auto: Ray for a cluster (RAY_ADDRESS), many videos or a video long enough for segments;
    in-process for one short video. An explicit executor is kept as it is."""
    import dataclasses

    from pipeline.config import with_overrides
    from pipeline.run import choose_executor
    from stages.decode import probe

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    auto = with_overrides(base_cfg, ["executor=auto"])
    clip = probe(data_dir / "videos" / "liveportrait_d20.mp4")  # 7 s
    assert choose_executor(auto, clip) == "local"
    assert choose_executor(auto, None) == "local"
    assert choose_executor(auto, None, videos=2) == "ray"
    for kind in ("ray", "local"):
        assert choose_executor(with_overrides(base_cfg, [f"executor={kind}"]), clip, videos=5) == kind
    long = dataclasses.replace(clip, frames=int(25 * 601))  # 601 s: more than twice segments.seconds
    assert auto["segments"]["seconds"] == 300 and choose_executor(auto, long) == "ray"
    assert choose_executor(with_overrides(auto, ["segments.seconds=0"]), long) == "local"
    assert choose_executor(with_overrides(auto, ["segments.parts=3"]), clip) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert choose_executor(auto, clip) == "ray"
