"""MTCNN weights, detector and DetectStage on the real photos in ../shared/data/faces."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from models.mtcnn import (
    MTCNN,
    WEIGHT_FILES,
    ONet,
    PNet,
    RNet,
    facenet_weights_dir,
    load_weights,
)
from models.mtcnn_pyramid import nms
from stages.detect import DetectStage, carry_faces
from stages.track import iou_matrix
from stages.types import FaceRecord, FrameBatch
from tests.conftest import FACES
from tests.media_checks import load_photo


def fit(name: str, size: int) -> np.ndarray:
    """A photo centre-cropped to a square and resized to ``size`` (no distortion)."""
    with Image.open(FACES / name) as im:
        return np.asarray(ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (size, size)))


def same_faces(a: list[FaceRecord], b: list[FaceRecord]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.box, y.box) and x.score == y.score and np.array_equal(x.points5, y.points5)
        for x, y in zip(a, b)
    )


# ------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name,cls", [("pnet", PNet), ("rnet", RNet), ("onet", ONet)])
def test_shipped_weights_load_strictly(name: str, cls: type[torch.nn.Module]) -> None:
    path = facenet_weights_dir() / WEIGHT_FILES[name]
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = load_weights(cls(), path)
    own = net.state_dict()
    assert list(own) == list(state)
    assert all(torch.equal(own[k], state[k]) for k in state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = torch.load(facenet_weights_dir() / "rnet.pt", map_location="cpu", weights_only=True)
    del state["dense4.weight"]
    path = tmp_path / "rnet.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"rnet\.pt.*key 'dense4\.weight' is missing"):
        load_weights(RNet(), path)


def test_mismatched_shape_and_extra_key_are_named(tmp_path: Path) -> None:
    state = torch.load(facenet_weights_dir() / "onet.pt", map_location="cpu", weights_only=True)
    state["dense5.weight"] = torch.zeros(256, 1151)
    state["conv9.weight"] = torch.zeros(1)
    path = tmp_path / "onet.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        load_weights(ONet(), path)
    assert "key 'dense5.weight' has shape 256x1151 in the file, 256x1152 in the model" in str(info.value)
    assert "0 missing, 1 unexpected, 1 mis-shaped" in str(info.value)


def test_missing_weight_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pnet\.pt.*make"):
        MTCNN(weights_dir=tmp_path)


# ------------------------------------------------------------------------------------------- detector


def test_nms_modes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 6, 6], [20, 20, 30, 30]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.95, 0.7])
    # IoU(0, 1) = 81/119 > 0.5; the small box inside box 0 has IoU 0.16 but overlap-over-min 1.0.
    assert nms(boxes, scores, 0.5, "union").tolist() == [2, 0, 3]
    assert nms(boxes, scores, 0.5, "min").tolist() == [2, 3]


@pytest.mark.parametrize("name", ["obama_a.jpg", "biden_b.jpg", "rose_leslie_a.jpg"])
def test_one_face_on_portraits(detector: DetectStage, name: str) -> None:
    image = load_photo(name)
    faces = detector.detect_image(image)
    assert len(faces) == 1, f"{name}: {len(faces)} faces"
    face = faces[0]
    x1, y1, x2, y2 = face.box
    h, w = image.shape[:2]
    assert face.box.dtype == np.float32 and face.points5.shape == (5, 2) and face.points5.dtype == np.float32
    assert face.score >= 0.9
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert 0.1 * min(h, w) < x2 - x1 < 0.9 * w
    assert 1.0 < (y2 - y1) / (x2 - x1) < 1.6  # MTCNN boxes are a bit taller than wide
    p = face.points5
    assert np.all((p[:, 0] > x1) & (p[:, 0] < x2) & (p[:, 1] > y1) & (p[:, 1] < y2))
    eye_l, eye_r, nose, mouth_l, mouth_r = p
    assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]  # image-left first
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])  # eyes above nose above mouth
    iod = np.linalg.norm(eye_r - eye_l)
    assert 0.25 < iod / (x2 - x1) < 0.6


def test_several_faces_largest_first(detector: DetectStage) -> None:
    faces = detector.detect_image(load_photo("emma_watson_multi_pose.jpg"))  # 3 panels, 3913 px wide
    assert len(faces) >= 2
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert np.min(np.diff(centres)) > 500  # different panels, not duplicates of one face


def test_no_face_on_gray_or_noise(detector: DetectStage) -> None:
    rng = np.random.default_rng(0)
    gray = np.full((480, 640, 3), 128, np.uint8)
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect_image(gray) == []
    assert detector.detect_image(noise) == []
    boxes, scores, points = detector.detector.detect(noise)[0]  # none even before min_score
    assert boxes.shape == (0, 4) and scores.shape == (0,) and points.shape == (0, 5, 2)


@pytest.fixture(scope="module")
def batch_frames() -> np.ndarray:
    names = ["obama_a.jpg", "biden_b.jpg", "rose_leslie_b.jpg", "sundar_pichai_b.jpg", "jack_dorsey_a.jpg"]
    frames = [fit(n, 480) for n in names] + [np.full((480, 480, 3), 90, np.uint8)]
    return np.stack(frames)


def make_batch(frames: np.ndarray) -> FrameBatch:
    n = len(frames)
    return FrameBatch("test", np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) * 512, frames)


def test_batch_equals_single_frames_bit_for_bit(detector: DetectStage, batch_frames: np.ndarray) -> None:
    out = detector(make_batch(batch_frames))
    assert [len(f) for f in out.faces] == [1, 1, 1, 1, 1, 0]
    for frame, faces in zip(batch_frames, out.faces):
        assert same_faces(faces, detector.detect_image(frame))
    # Another grouping (reversed, split differently) changes nothing either.
    rev = detector(make_batch(batch_frames[::-1].copy()))
    for a, b in zip(out.faces, rev.faces[::-1]):
        assert same_faces(a, b)


def test_deterministic(detector: DetectStage, batch_frames: np.ndarray) -> None:
    frames = batch_frames[:3]
    a = detector.detector.detect(frames)
    b = detector.detector.detect(frames.copy())
    for (b1, s1, p1), (b2, s2, p2) in zip(a, b):
        assert np.array_equal(b1, b2) and np.array_equal(s1, s2) and np.array_equal(p1, p2)


def test_read_only_frames_and_flush(detector: DetectStage, batch_frames: np.ndarray) -> None:
    frames = batch_frames[:1].copy()
    frames.flags.writeable = False  # as they come out of Ray's object store
    out = detector(make_batch(frames))
    assert len(out.faces[0]) == 1
    assert detector.flush() == []
    empty = detector(make_batch(np.zeros((0, 64, 64, 3), np.uint8)))
    assert empty.faces == []


def test_large_frames_are_detected_downscaled_and_mapped_back(cfg: dict, detector: DetectStage) -> None:
    with Image.open(FACES / "rose_leslie_a.jpg") as im:  # 1280 x 799, face well inside the frame
        small = np.asarray(im.convert("RGB").resize((800, 500), Image.LANCZOS))
        big = np.asarray(im.convert("RGB").resize((1600, 1000), Image.LANCZOS))  # > max_side 1280
    (face_small,) = detector.detect_image(small)
    (face_big,) = detector.detect_image(big)
    size = face_small.box[2] - face_small.box[0]
    # (MTCNN boxes jitter by a few % between scales; a wrong mapping back would be off by 25 %.)
    assert np.abs(face_big.box / 2 - face_small.box).max() < 0.1 * size
    assert np.abs(face_big.points5 / 2 - face_small.points5).max() < 0.1 * size
    # min_face_size is in frame pixels (box regression still finds faces somewhat below it).
    strict = copy.deepcopy(cfg)
    strict["detect"]["min_face_size"] = 3 * size
    assert DetectStage(strict).detect_image(small) == []


# ------------------------------------------------------------------------------------- keyframes


@pytest.fixture(scope="module")
def talking_head() -> np.ndarray:
    """The first 30 frames of liveportrait_d20.mp4 (480², one face, a slowly moving head)."""
    from stages.decode import read_batches
    from tests.conftest import VIDEOS

    return next(read_batches(VIDEOS / "liveportrait_d20.mp4", 30)).frames


def _stage(cfg: dict, every: int) -> DetectStage:
    from pipeline.config import with_overrides

    return DetectStage(with_overrides(cfg, [f"detect.every={every}"]))


def _iod(face: FaceRecord) -> float:
    return float(np.linalg.norm(face.points5[0] - face.points5[1]))


def test_keyframes_detect_every_nth_frame_and_carry_the_faces_between(cfg, talking_head) -> None:
    every_frame = _stage(cfg, 1)(make_batch(talking_head.copy())).faces
    stage = _stage(cfg, 5)
    out = stage(make_batch(talking_head.copy())).faces
    assert stage.detected_frames == 6  # frames 0, 5, ..., 25: the face is followed on every other frame
    for f, (carried, detected) in enumerate(zip(out, every_frame)):
        assert len(carried) == len(detected) == 1
        if f % 5 == 0:
            assert same_faces(carried, detected)
            continue
        a, b = carried[0], detected[0]
        assert float(iou_matrix(a.box[None], b.box[None])[0, 0]) > 0.85, f
        assert np.abs(a.points5 - b.points5).max() < 0.1 * _iod(b), f


def test_a_cut_or_a_face_lost_brings_the_detector_back(cfg, talking_head) -> None:
    photo = np.repeat(fit("obama_a.jpg", 480)[None], 4, axis=0)
    frames = np.concatenate([talking_head[:7], photo, talking_head[7:10]])  # cuts at 7 and 11
    frames[12] = 90  # a grey frame, then the talking head again
    stage = _stage(cfg, 5)
    out = stage(make_batch(frames.copy())).faces
    single = _stage(cfg, 1)
    for f in (7, 10, 11, 12, 13):  # cut, schedule, cut back, grey (a cut), after a frame without a face
        assert same_faces(out[f], single.detect_image(frames[f])), f
    assert out[12] == [] and len(out[8]) == len(out[9]) == 1  # 8 and 9 carry the photo's face
    assert stage.detected_frames == 7  # 0, 5 and the five above
    # a face that cannot be followed (into a grey frame) is lost: the caller asks the detector
    first = talking_head[0]
    assert carry_faces(out[0], first, np.full_like(first, 90)) is None
    still = carry_faces(out[0], first, first)
    assert still is not None and np.allclose(still[0].box, out[0][0].box, atol=0.01)
    assert carry_faces([], first, first) is None


def test_state_is_per_video_and_a_later_start_agrees_from_its_first_keyframe(cfg, talking_head) -> None:
    whole = _stage(cfg, 5)(make_batch(talking_head.copy())).faces
    stage = _stage(cfg, 5)
    late = FrameBatch("late", np.arange(7, 30), np.arange(7, 30) * 512, talking_head[7:].copy())
    part = stage(late).faces
    assert stage.detected_frames == 1 + 4  # frame 7 (nothing to carry yet), then 10, 15, 20, 25
    for f in range(10, 30):
        assert same_faces(part[f - 7], whole[f]), f
    assert stage.flush() == [] and not stage._videos  # the video's end: its last frame is not kept
    again = FrameBatch("late", np.arange(11, 13), np.arange(11, 13) * 512, talking_head[11:13].copy())
    stage(again)
    assert stage.detected_frames == 5 + 1  # frame 11 starts afresh: nothing to carry


def test_a_lost_face_is_detected_up_to_the_next_keyframe_in_one_batched_call(
    cfg, talking_head, monkeypatch
) -> None:
    import stages.detect as detect_module

    carry, calls = detect_module.carry_faces, []

    def lose_at_frame_7(faces, prev, frame):
        calls.append(len(calls))
        return None if len(calls) == 6 else carry(faces, prev, frame)  # carries 1-4 and 6, then 7 fails

    monkeypatch.setattr(detect_module, "carry_faces", lose_at_frame_7)
    stage = _stage(cfg, 5)
    batches = []
    monkeypatch.setattr(
        stage.detector, "detect", lambda f, d=stage.detector.detect: batches.append(len(f)) or d(f)
    )
    out = stage(make_batch(talking_head[:16].copy())).faces
    assert batches == [4, 3]  # keyframes 0, 5, 10, 15; then the lost run 7-9 together
    assert stage.detected_frames == 7 and len(calls) == 6 + 4  # then carried again 11-14
    single = _stage(cfg, 1)
    for f in (7, 8, 9):
        assert same_faces(out[f], single.detect_image(talking_head[f])), f
    # the state crosses batches: frame 16 (next batch) carries the copy of frame 15 kept by the stage
    later = stage(FrameBatch("test", np.arange(16, 18), np.arange(16, 18) * 512, talking_head[16:18].copy()))
    assert batches == [4, 3] and len(later.faces[0]) == 1
