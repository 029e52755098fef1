"""``python -m pipeline crops``: what the configured swap backend receives, written out and checked against
GHOST's crop rebuilt independently (scikit-image's similarity, as insightface calls it, and OpenCV)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.__main__ import main
from pipeline.config import CONFIG_DIR
from stages.geometry import GHOST_POSE_TEMPLATES, transform_points
from tests.media_checks import load_photo
from tests.media_making import cut_360p

FACESHIFTER = str(CONFIG_DIR / "faceshifter.yaml")


def ghost_reference(points5: np.ndarray) -> np.ndarray:
    """GHOST's frame -> 224 matrix for ``points5``, as insightface 0.2.1's ``estimate_norm`` computes it."""
    from skimage.transform import SimilarityTransform

    pts = np.asarray(points5, np.float32)
    best, best_error = None, np.inf
    for template in GHOST_POSE_TEMPLATES * 2:
        m = SimilarityTransform.from_estimate(pts, template).params[:2]
        error = np.sqrt(((np.c_[pts, np.ones(5)] @ m.T - template) ** 2).sum(1)).sum()
        if error < best_error:
            best, best_error = m, error
    return best


def ghost_keypoints_256(points5: np.ndarray) -> np.ndarray:
    """Where GHOST's 224 crop, resized to 256 (half-pixel centres), puts ``points5``: ``(5, 2)`` px."""
    m = ghost_reference(points5) * (256 / 224)
    m[:, 2] += 0.5 * 256 / 224 - 0.5
    return transform_points(points5, m)


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "crops.jsonl").read_text().splitlines()]


def test_photo_crop_is_ghosts_crop(data_dir, tmp_path, capsys):
    out = tmp_path / "crops"
    photo_path = data_dir / "faces" / "obama_a.jpg"
    assert main(["crops", "--input", str(photo_path), "--out", str(out), "--config", FACESHIFTER]) == 0
    assert "1 crops (ghost template)" in capsys.readouterr().out
    (row,) = read_rows(out)
    assert (row["frame"], row["template"], row["pose"]) == (0, "ghost", 2)
    points = np.array(row["points5"], np.float32)
    m224 = ghost_reference(points)
    ours = transform_points(points, np.array(row["affine"]))
    assert np.abs(ours - ghost_keypoints_256(points)).max() <= 0.25  # px in the 256 crop

    photo = load_photo("obama_a.jpg")
    crop224 = cv2.warpAffine(photo, m224, (224, 224), borderValue=0)
    crop = np.asarray(Image.open(out / row["crop"]))
    assert crop.shape == (256, 256, 3)
    mse = ((crop.astype(np.float64) - cv2.resize(crop224, (256, 256))) ** 2).mean()
    assert mse == 0 or 10 * np.log10(255.0**2 / mse) >= 30.0

    # GHOST's ArcFace input: the 224 crop halved with align_corners=True, i.e. 112 pixel i samples 224
    # pixel i * 223 / 111 (bilinear).
    arcface = np.asarray(Image.open(out / row["arcface_crop"])).astype(np.float64)
    halve = np.array([[111 / 223, 0, 0], [0, 111 / 223, 0]])
    half = cv2.warpAffine(crop224, halve, (112, 112), flags=cv2.INTER_LINEAR).astype(np.float64)
    assert arcface.shape == (112, 112, 3)
    assert np.abs(arcface - half).max() <= 2  # 8-bit rounding and OpenCV's 1/32 px weights


def test_existing_index_is_refused_without_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / "crops"
    args = ["crops", "--input", str(data_dir / "faces" / "obama_a.jpg"), "--out", str(out)]
    assert main(args) == 0
    before = (out / "crops.jsonl").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crops.jsonl exists" in err and "--overwrite" in err
    assert (out / "crops.jsonl").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    assert read_rows(out)[0]["template"] == "arcface"  # the default (classic) backend's crop


def test_bad_inputs_give_one_line(tmp_path, capsys):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    assert main(["crops", "--input", str(fake), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(fake) in err
    assert main(["crops", "--input", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_video_crops_follow_the_tracks(data_dir, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    cut_360p(data_dir / "videos" / "retalking_face_5.mp4", clip, 1.0)
    out = tmp_path / "crops"
    assert main(["crops", "--input", str(clip), "--out", str(out), "--config", FACESHIFTER]) == 0
    rows = read_rows(out)
    assert [r["frame"] for r in rows] == list(range(len(rows))) and len(rows) >= 20
    assert {r["track"] for r in rows} == {0}
    for r in rows[:: max(1, len(rows) // 4)]:
        points = np.array(r["points5"], np.float32)
        ours = transform_points(points, np.array(r["affine"]))
        assert np.abs(ours - ghost_keypoints_256(points)).max() <= 0.25
        assert Image.open(out / r["crop"]).size == (256, 256)
        assert "arcface_crop" not in r  # only photos are sources
