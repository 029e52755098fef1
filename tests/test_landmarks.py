"""68-point landmarks: dlib on the real photos in ../shared/data/faces, FAN plumbing with random weights."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.detect import DetectStage
from stages.landmarks import (
    FAN_WEIGHTS,
    LandmarkStage,
    dlib_rect_from_points,
    fan_box_from_mtcnn,
)
from stages.types import FaceRecord, FrameBatch
from tests.media_checks import load_photo

FRONTAL = ["obama_a.jpg", "biden_b.jpg", "rose_leslie_a.jpg", "sundar_pichai_b.jpg", "jack_dorsey_a.jpg"]


@pytest.fixture(scope="module")
def dlib_stage(cfg: dict) -> LandmarkStage:
    assert cfg["landmarks"]["model"] == "dlib"
    return LandmarkStage(cfg)


def eye_error(face: FaceRecord) -> np.ndarray:
    """Distance of the 68-point eye centres from MTCNN's eye points, in inter-ocular distances, ``(2,)``."""
    lm = face.landmarks68
    assert lm is not None
    eyes68 = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    iod = np.linalg.norm(face.points5[1] - face.points5[0])
    return np.linalg.norm(eyes68 - face.points5[:2], axis=1) / iod


# ------------------------------------------------------------------------------------------- dlib


def test_dlib_rect_geometry() -> None:
    # Upright face: eyes 40 px apart at y=100, mouth corners at y=150 -> D = 50, IOD = 40.
    points = np.array([[80, 100], [120, 100], [100, 125], [85, 150], [115, 150]], dtype=np.float32)
    x1, y1, x2, y2 = dlib_rect_from_points(points)
    side = 1.56 * 50 + 0.67 * 40
    assert x2 - x1 == pytest.approx(side) and y2 - y1 == pytest.approx(side)
    assert (x1 + x2) / 2 == pytest.approx(100.0) and (y1 + y2) / 2 == pytest.approx(100 + 0.45 * 50)


@pytest.mark.parametrize("name", FRONTAL)
def test_dlib_landmarks_on_frontal_photos(
    detector: DetectStage, dlib_stage: LandmarkStage, name: str
) -> None:
    image = load_photo(name)
    faces = detector.detect_image(image)
    assert len(faces) == 1
    lms = dlib_stage.landmarks_for(image, faces)
    face = faces[0]
    assert lms.shape == (1, 68, 2) and lms.dtype == np.float32
    assert face.landmarks68 is not None and np.array_equal(face.landmarks68, lms[0])
    x1, y1, x2, y2 = face.box
    gw, gh = 0.25 * (x2 - x1), 0.25 * (y2 - y1)
    lm = face.landmarks68
    assert np.all((lm[:, 0] > x1 - gw) & (lm[:, 0] < x2 + gw) & (lm[:, 1] > y1 - gh) & (lm[:, 1] < y2 + gh))
    # Measured 0.004-0.06 on these photos; 0.15 leaves room without hiding a wrong box transform.
    assert np.all(eye_error(face) < 0.15), eye_error(face)
    # iBUG order: jaw runs image-left to image-right, brows above eyes above nose tip above mouth.
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]
    assert lm[19, 1] < lm[37, 1] < lm[30, 1] < lm[51, 1] < lm[57, 1] < lm[8, 1]


def test_stage_fills_every_face(detector: DetectStage, dlib_stage: LandmarkStage) -> None:
    image = load_photo("emma_watson_multi_pose.jpg")
    half = np.asarray(Image.fromarray(image).resize((image.shape[1] // 2, image.shape[0] // 2)))
    frames = np.stack([half, half[:, ::-1]])  # the second frame mirrored
    batch = FrameBatch("emma", np.arange(2), np.arange(2), frames)
    batch = dlib_stage(detector(batch))
    assert all(len(f) >= 2 for f in batch.faces)
    for faces in batch.faces:
        for face in faces:
            assert face.landmarks68 is not None and face.landmarks68.shape == (68, 2)
            assert face.landmarks68.dtype == np.float32 and np.isfinite(face.landmarks68).all()
    assert dlib_stage.flush() == []
    assert dlib_stage.landmarks_for(half, []).shape == (0, 68, 2)


def test_unknown_model_is_an_error(cfg: dict) -> None:
    bad = copy.deepcopy(cfg)
    bad["landmarks"]["model"] = "hrnet"
    with pytest.raises(ValueError, match="dlib or fan"):
        LandmarkStage(bad)


# ------------------------------------------------------------------------------------------- FAN


def test_fan_missing_weights_names_file_and_folder(
    cfg: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fan = copy.deepcopy(cfg)
    fan["landmarks"]["model"] = "fan"
    with pytest.raises(FileNotFoundError) as info:
        LandmarkStage(fan)
    message = str(info.value)
    assert FAN_WEIGHTS in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "\n" not in message
    assert not (tmp_path / "hub" / "checkpoints" / FAN_WEIGHTS).exists()  # nothing was downloaded


def test_fan_box_transform() -> None:
    x1, y1, x2, y2 = fan_box_from_mtcnn(np.array([100, 200, 200, 330], dtype=np.float32))
    w, h = 100.0, 130.0
    # face-alignment: scale = (w + h) / 195 and centre lifted by 0.12 h must equal the tight-box mapping.
    assert ((x2 - x1) + (y2 - y1)) / 195 == pytest.approx((w + h) / 165)
    assert (y1 + y2) / 2 - 0.12 * (y2 - y1) == pytest.approx(265 - 0.12 * h)
    assert (x1 + x2) / 2 == pytest.approx(150)


@pytest.mark.slow
def test_fan_plumbing_with_random_weights(
    cfg: dict, detector: DetectStage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from face_alignment.models import FAN

    # The 1.5.0 file is a plain state_dict (torch.load(weights_only=True) + load_state_dict), not TorchScript.
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), folder / FAN_WEIGHTS)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fan = copy.deepcopy(cfg)
    fan["landmarks"]["model"] = "fan"
    stage = LandmarkStage(fan)
    image = load_photo("sundar_pichai_b.jpg")
    faces = detector.detect_image(image)
    assert len(faces) == 1
    # Random weights decay to denormal floats, which make the CPU 3x slower; real weights do not.
    torch.set_flush_denormal(True)
    try:
        lms = stage.landmarks_for(image, faces)
    finally:
        torch.set_flush_denormal(False)  # torch's default
    assert lms.shape == (1, 68, 2) and lms.dtype == np.float32 and np.isfinite(lms).all()
    assert faces[0].landmarks68 is not None
    assert sorted(p.name for p in folder.iterdir()) == [FAN_WEIGHTS]  # no S3FD file was fetched
