"""Training data (pipeline/training/data.py): seeded pair sampling and the crop folder dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InputError
from pipeline.training.data import FaceCrops, PairSampler
from tests.training.conftest import write_crops


def test_pair_sampler_is_seeded_split_and_marks_reconstruction_pairs() -> None:
    sampler = PairSampler(n=10, batch_size=4, seed=3, same_share=0.3)
    t, s, same = sampler(7)
    t2, s2, same2 = PairSampler(n=10, batch_size=4, seed=3, same_share=0.3)(7)
    assert torch.equal(t, t2) and torch.equal(s, s2) and torch.equal(same, same2)
    assert torch.equal(same, s == t)
    draws = [sampler(step) for step in range(1, 501)]
    share = torch.cat([d[2] for d in draws]).float().mean().item()
    assert 0.25 < share < 0.35
    # Targets walk through permutations: the first 10 positions (steps 1-2, then part of 3) cover all crops.
    stream = torch.cat([d[0] for d in draws[:5]])
    assert sorted(stream[:10].tolist()) == list(range(10))
    # Two ranks of the same step take disjoint positions of the same stream.
    r0 = PairSampler(10, 2, 3, 0.3, rank=0, world=2)(1)[0]
    r1 = PairSampler(10, 2, 3, 0.3, rank=1, world=2)(1)[0]
    assert sorted([*r0.tolist(), *r1.tolist()]) == sorted(stream[:4].tolist())
    assert torch.equal(PairSampler(10, 4, 3, 1.0)(1)[2], torch.ones(4, dtype=torch.bool))
    with pytest.raises(InputError, match="at least 2"):
        PairSampler(1, 4, 0, 0.2)


def test_face_crops_reads_resizes_and_refuses_empty_folders(tmp_path: Path) -> None:
    folder = write_crops(tmp_path / "crops", 3, 32)
    (folder / "index.jsonl").write_text("{}\n")
    data = FaceCrops(folder, 16)
    assert len(data) == 3
    x = data[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0
    same = FaceCrops(folder, 32)[1]
    raw = torch.from_numpy(np.array(Image.open(folder / "c01.png"))).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(same, raw)
    assert data.batch(torch.tensor([2, 0])).shape == (2, 3, 16, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PNG/JPG"):
        FaceCrops(tmp_path / "empty", 16)
    with pytest.raises(InputError, match="no such folder"):
        FaceCrops(tmp_path / "missing", 16)
