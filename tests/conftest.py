"""Shared test fixtures: the real media in ../shared/data (never copied into the repository)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
VIDEOS = DATA / "videos"
FACES = DATA / "faces"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# the classic swap's landmarked source and target faces, shared by its four test modules
pytest_plugins = ["tests.classic_fixtures"]


def swap_command(video: Path, source: Path, output: Path, *args: str) -> list[str]:
    """The command line of ``python -m pipeline swap`` (run it with ``cwd=REPO``)."""
    return [
        sys.executable,
        *("-m", "pipeline", "swap"),
        *("--input", str(video), "--source", str(source), "--output", str(output)),
        *args,
    ]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not VIDEOS.is_dir():
        pytest.fail(f"test media not found at {DATA}: clone the repository next to ../shared")
    return DATA


@pytest.fixture(scope="session")
def base_cfg() -> dict:
    from pipeline.config import load_config

    return load_config()


@pytest.fixture(scope="module")
def cfg(base_cfg: dict) -> dict:
    """A private copy of the default config for one test module."""
    import copy

    return copy.deepcopy(base_cfg)


@pytest.fixture(scope="session")
def detector(base_cfg: dict):
    """The default MTCNN detect stage with the detector on every frame (``detect.every=1``), built once."""
    from pipeline.config import with_overrides
    from stages.detect import DetectStage

    return DetectStage(with_overrides(base_cfg, ["detect.every=1"]))
