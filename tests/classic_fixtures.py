"""Shared fixtures of the classic swap's tests: dlib's 68 landmarks, the source face (obama_a) and real
target faces (liveportrait_d20) aligned as the align stage aligns them, the stage built on them, and five
points of a face turned by a given amount. Registered for every test module by ``tests/conftest.py``."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from stages.geometry import crop_template, estimate_similarity, points5_from_68, transform_points, warp_crops
from stages.source_face import SourceFace, make_source_face
from stages.swap_classic import ClassicSwapStage
from tests.conftest import DATA

S = 256


@pytest.fixture(scope="module")
def landmarker():
    dlib = pytest.importorskip("dlib")
    frm = pytest.importorskip("face_recognition_models")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_model_location())

    def run(image: np.ndarray) -> np.ndarray:
        dets = detector(image, 0) or detector(image, 1)
        assert dets, "dlib found no face in a test image"
        rect = max(dets, key=lambda r: r.width() * r.height())
        shape = predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    return run


def _frames(name: str, wanted: list[int]) -> dict[int, np.ndarray]:
    out = {}
    with av.open(str(DATA / "videos" / name)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    return out


@pytest.fixture(scope="module")
def source(cfg, landmarker) -> SourceFace:
    image = np.asarray(Image.open(DATA / "faces" / "obama_a.jpg").convert("RGB"))
    lm = landmarker(image)
    return make_source_face(image, points5_from_68(lm), lm, cfg)


@pytest.fixture(scope="module")
def targets(cfg, landmarker) -> dict:
    """Aligned crops ``(F, S, S, 3)``, landmarks in crop pixels ``(F, 68, 2)`` and the frames they came from.

    Frame 40 of liveportrait_d20 has the mouth wide open; frame 0 has it closed.
    """
    frames = _frames("liveportrait_d20.mp4", [0, 40, 120])
    keys = sorted(frames)
    tmpl = crop_template(S, cfg["align"]["face_scale"], cfg["align"]["centre_y"])
    lms, mats = [], []
    for k in keys:
        lm = landmarker(frames[k])
        m = estimate_similarity(points5_from_68(lm), tmpl)
        lms.append(lm)
        mats.append(m)
    stack = np.stack([frames[k] for k in keys])
    crops = warp_crops(stack, list(range(len(keys))), mats, S)
    crop_lm = np.stack([transform_points(lm, m) for lm, m in zip(lms, mats)])
    return {"keys": keys, "frames": stack, "lm": lms, "affine": mats, "crops": crops, "crop_lm": crop_lm}


@pytest.fixture(scope="module")
def stage(cfg, source) -> ClassicSwapStage:
    return ClassicSwapStage(cfg, source)


def turned_points5(turn: float, angle: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """Five points of a face whose nose tip is ``turn`` eye distances off the eyes' midpoint, rotated by
    ``angle`` radians, scaled and shifted."""
    p = np.array([[0.0, 0.0], [1.0, 0.0], [0.5 + turn, 0.6], [0.15, 1.0], [0.85, 1.0]])
    c, s_ = np.cos(angle), np.sin(angle)
    return (p @ np.array([[c, s_], [-s_, c]]) * scale + shift).astype(np.float32)
