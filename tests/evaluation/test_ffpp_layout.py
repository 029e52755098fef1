"""FaceForensics++ layout and pairing (pipeline/evaluation/ffpp_layout.py): split files, both directions of
each pair, the folder layout and its errors, a --score-only folder's method name, evenly spaced frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import InputError
from pipeline.evaluation.ffpp_layout import (
    find_layout,
    frame_indices,
    parse_video_name,
    read_split,
    score_only_folder,
    split_ids,
    video_name,
    video_pairs,
)

# ----------------------------------------------------------------------------------------- split and pairing


def write_split(folder: Path, pairs, name: str = "test") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(pairs))
    return path


def test_split_gives_both_directions_in_file_order(tmp_path):
    path = write_split(tmp_path, [["953", "974"], ["012", "026"]])
    pairs = read_split(path)
    assert pairs == [("953", "974"), ("012", "026")]
    assert video_pairs(pairs) == [("953", "974"), ("974", "953"), ("012", "026"), ("026", "012")]
    assert split_ids(pairs) == ["953", "974", "012", "026"]
    assert video_name("953", "974") == "953_974"
    assert parse_video_name("953_974.mp4") == ("953", "974")
    assert parse_video_name("953.mp4") is None


@pytest.mark.parametrize(
    "content,problem",
    [
        ("not json", "not a readable JSON"),
        ('{"a": 1}', "JSON list"),
        ('[["000", "001"], ["002"]]', "entry 1"),
        ('[["000", "000"]]', "entry 0"),
        ('[["000", "abc"]]', "entry 0"),
    ],
)
def test_bad_split_file_is_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "test.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_split(path)
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_layout_errors_name_the_missing_part(tmp_path):
    with pytest.raises(InputError, match="root folder not found"):
        find_layout(tmp_path / "nowhere", "c23", "test")
    (tmp_path / "original_sequences" / "youtube" / "c40" / "videos").mkdir(parents=True)
    with pytest.raises(InputError, match=r"c23/videos: folder of original videos not found.*present: c40"):
        find_layout(tmp_path, "c23", "test")
    with pytest.raises(InputError, match=r"splits/test\.json: split file not found"):
        find_layout(tmp_path, "c40", "test")
    write_split(tmp_path / "splits", [["000", "001"]])
    layout = find_layout(tmp_path, "c40", "test")
    assert layout.original("000") == tmp_path / "original_sequences/youtube/c40/videos/000.mp4"
    (tmp_path / "original_sequences" / "youtube" / "raw" / "videos").mkdir(parents=True)
    assert find_layout(tmp_path, "c0", "test").originals.parent.name == "raw"  # FF++'s name for c0


def test_score_only_folder_is_named_after_the_method(tmp_path):
    videos = tmp_path / "manipulated_sequences" / "FaceShifter" / "c23" / "videos"
    videos.mkdir(parents=True)
    (videos / "000_003.mp4").write_bytes(b"")
    (tmp_path / "original_sequences" / "youtube" / "c23" / "videos").mkdir(parents=True)
    write_split(tmp_path / "splits", [["000", "003"]])
    layout = find_layout(tmp_path, "c23", "test")
    assert score_only_folder("manipulated_sequences/FaceShifter", layout) == (videos, "FaceShifter")
    assert score_only_folder(videos, layout) == (videos, "FaceShifter")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="TTT_SSS"):
        score_only_folder(tmp_path / "empty", layout)


@pytest.mark.parametrize(
    "n,k,expected",
    [(25, 10, [0, 3, 5, 8, 11, 13, 16, 19, 21, 24]), (4, 10, [0, 1, 2, 3]), (9, 1, [4]), (0, 10, [])],
)
def test_frame_indices_are_evenly_spaced(n, k, expected):
    assert frame_indices(n, k) == expected
