"""Shared helpers of the training tests: the tiny config, random crop folders, torch's thread count kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import CONFIG_DIR, load_config

TINY_CONFIG = CONFIG_DIR / "train_tiny.yaml"


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    """train() sets torch's thread count from the config: restore it for the other tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def tiny_cfg(*overrides: str) -> dict:
    return load_config(TINY_CONFIG, ["runtime.torch_threads=2", *overrides])


def write_crops(folder: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` random ``side``² RGB PNG crops in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"c{i:02d}.png")
    return folder


@pytest.fixture(scope="session")
def face_crops(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256² aligned crops of the shared photos (one per face prepare-faces keeps: 41 from 35 photos), made
    by prepare-faces (MTCNN + GHOST's crop); made once for every training test module."""
    from pipeline.training.prepare_faces import prepare_faces

    out = tmp_path_factory.mktemp("crops")
    summary = prepare_faces([data_dir / "faces"], out, load_config(), size=256, progress=False)
    assert summary["crops_written"] >= 10, summary
    return out


@pytest.fixture(scope="session")
def ffhq_crops(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256² FFHQ-aligned crops of the shared photos (``prepare-faces --template ffhq``): the latent swap's
    training crops; made once."""
    from pipeline.training.prepare_faces import prepare_faces

    out = tmp_path_factory.mktemp("ffhq_crops")
    summary = prepare_faces(
        [data_dir / "faces"], out, load_config(), size=256, progress=False, template="ffhq"
    )
    assert summary["crops_written"] >= 10, summary
    return out
