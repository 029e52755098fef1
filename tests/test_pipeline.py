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
