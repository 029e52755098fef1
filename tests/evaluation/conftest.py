"""Fixtures of the evaluation tests: a short clip of the shared media and the source photo scored against."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.media_making import stream_copy

VIDEO = DATA / "videos" / "liveportrait_d20.mp4"
SOURCE = DATA / "faces" / "obama_a.jpg"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """First 1.5 s of liveportrait_d20.mp4 (480², 25 fps, with audio), stream-copied."""
    return stream_copy(VIDEO, tmp_path_factory.mktemp("evaluate") / "clip.mp4", 1.5)
