"""Mask stage (stages/mask.py): occlusion estimate on a real aligned face with a painted occluder, the
temporal attack/release filter, box and region masks, and config checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.errors import ConfigError, ModelFileError
from pipeline.config import load_config
from pipeline.run import prepare_source
from stages.mask import MaskStage, box_masks, occlusion_masks
from stages.types import FaceRecord, FrameBatch
from tests.conftest import FACES

S = 256


@pytest.fixture(scope="module")
def face(cfg):
    """obama_a.jpg aligned as the pipeline aligns video faces: crop ``(S, S, 3) uint8``, 68 points in it."""
    return prepare_source(FACES / "obama_a.jpg", cfg)


def microphone(crop: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crop with a dark grey bar (a handheld microphone) over mouth and chin, and ``(S, S) bool``: the
    part of the bar inside the face's landmark hull (where a face would be pasted)."""
    from stages.mask_geometry import hull_distance, hull_points

    out = crop.copy()
    bar = np.zeros(crop.shape[:2], bool)
    x0, x1 = int(lm[48, 0]) + 5, int(lm[54, 0]) - 5
    y0, y1 = int(lm[51, 1]) - 4, int(lm[8, 1]) + 10
    bar[y0:y1, x0:x1] = True
    out[bar] = (38, 36, 40)
    hull = hull_distance(hull_points(np.asarray(lm, np.float64)[None]), S)[0].numpy()
    return out, bar & (hull > 2)


def test_occluder_is_masked_and_skin_is_not(face, cfg):
    lm = face.landmarks68[None].astype(np.float64)
    clean = occlusion_masks(face.crop[None], lm, cfg)[0]
    covered, area = microphone(face.crop, face.landmarks68)
    masked = occlusion_masks(covered[None], lm, cfg)[0]
    assert clean.shape == (S, S) and clean.dtype == torch.float32
    assert float(clean.min()) >= 0.0 and float(clean.max()) <= 1.0
    # the bar is removed from the paste where the face would be pasted (inside the landmark hull)
    assert float(masked[torch.from_numpy(area)].mean()) < 0.1
    from stages.mask_geometry import hull_distance, hull_points

    hull = hull_distance(hull_points(lm), S)[0]
    # the cheeks (away from the bar) stay pasted, with or without the bar
    cheeks = np.zeros((S, S), bool)
    y = int(lm[0, 29, 1])
    cheeks[y - 6 : y + 6, int(lm[0, 2, 0]) + 12 : int(lm[0, 31, 0]) - 8] = True
    cheeks[y - 6 : y + 6, int(lm[0, 35, 0]) + 8 : int(lm[0, 14, 0]) - 12] = True
    assert float(masked[torch.from_numpy(cheeks)].mean()) > 0.95
    # without an occluder almost nothing of the face is taken out; the open mouth (teeth) may be, as the
    # classic swap keeps the target's inner mouth anyway
    from stages.mask_geometry import INNER_LIP, polygon_distance

    mouth = polygon_distance(lm[:, INNER_LIP], S, pad=20.0)[0] > -12
    assert float(clean[(hull > 8) & ~mouth].mean()) > 0.98


def _batch(crop: np.ndarray, lm: np.ndarray, index: int, frame: np.ndarray | None = None) -> FrameBatch:
    """One frame whose face already went through align and swap: the crop is the frame (identity affine)."""
    rec = FaceRecord(
        box=np.array([0, 0, S, S], np.float32),
        score=1.0,
        points5=np.zeros((5, 2), np.float32),
        landmarks68=lm.astype(np.float32),
        track_id=0,
        affine=np.array([[1, 0, 0], [0, 1, 0]], np.float32),
        crop=crop,
        swapped=crop,
        mask=np.ones((S, S), np.float32),
    )
    frames = (crop if frame is None else frame)[None]
    return FrameBatch("v", np.array([index]), np.array([index]), frames, [[rec]])


def test_release_keeps_an_occluder_for_a_few_frames_and_cuts_reset_it(face, cfg):
    covered, area = microphone(face.crop, face.landmarks68)
    stage = MaskStage(cfg)
    first = stage(_batch(covered, face.landmarks68, 0)).faces[0][0].mask
    after = stage(_batch(face.crop, face.landmarks68, 1)).faces[0][0].mask
    fresh = MaskStage(cfg)(_batch(face.crop, face.landmarks68, 1)).faces[0][0].mask
    assert first[area].mean() < 0.1
    release = cfg["mask"]["release"]
    # the frame after the occluder left: still mostly masked there (slow release), fully pasted elsewhere
    assert after[area].mean() == pytest.approx(
        release * first[area].mean() + (1 - release) * fresh[area].mean(), abs=0.02
    )
    assert after[area].mean() < fresh[area].mean() - 0.3
    # a scene cut (a different frame) starts over
    stage = MaskStage(cfg)
    stage(_batch(covered, face.landmarks68, 0))
    other = np.zeros_like(face.crop)
    other[..., 2] = 255
    cut = stage(_batch(face.crop, face.landmarks68, 1, frame=other)).faces[0][0].mask
    np.testing.assert_allclose(cut, fresh, atol=1e-6)


def test_landmark_mask_is_kept_and_multiplied(face, cfg):
    local = copy.deepcopy(cfg)
    local["mask"]["types"] = ["landmarks", "box"]
    batch = _batch(face.crop, face.landmarks68, 0)
    hull_only = np.zeros((S, S), np.float32)
    hull_only[64:192, 64:192] = 0.5
    batch.faces[0][0].mask = hull_only
    out = MaskStage(local)(batch).faces[0][0].mask
    box = box_masks(1, S, local["mask"]["box_blur"])[0].numpy()
    np.testing.assert_allclose(out, hull_only * box, atol=1e-6)
    assert box[0, 0] < 0.01 and box[S // 2, S // 2] == 1.0
    local["mask"]["types"] = ["box"]
    out = MaskStage(local)(_batch(face.crop, face.landmarks68, 0)).faces[0][0].mask
    np.testing.assert_allclose(out, box, atol=1e-6)


def test_mask_types_are_checked_on_load():
    with pytest.raises(ConfigError, match="mask.types"):
        load_config(None, ["mask.types=[landmarks, hands]"])
    with pytest.raises(ConfigError, match="mask.types"):
        load_config(None, ["mask.types=[]"])
    assert load_config(None, ["mask.types=[box, occlusion]"])["mask"]["types"] == ["box", "occlusion"]


def test_region_mask_needs_the_parser_weights_and_uses_them(face, cfg, tmp_path):
    from models.bisenet import bisenet19

    local = copy.deepcopy(cfg)
    local["mask"]["types"] = ["landmarks", "region"]
    local["weights"]["dir"] = str(tmp_path)
    with pytest.raises(ModelFileError, match="79999_iter.pth"):
        MaskStage(local)
    with pytest.raises(ModelFileError, match="79999_iter.pth"):
        prepare_source(FACES / "obama_a.jpg", local)  # checked before any output exists
    torch.manual_seed(0)
    torch.save(bisenet19().state_dict(), tmp_path / "79999_iter.pth")
    out = MaskStage(local)(_batch(face.crop, face.landmarks68, 0)).faces[0][0].mask
    assert out.shape == (S, S) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    local["mask"]["region_classes"] = ["skin", "moustache"]
    with pytest.raises(ConfigError, match="moustache"):
        MaskStage(local)


def microphone_pixels(frame: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: a handheld microphone over the lower face, found independently of the pipeline:
    inside dlib's jaw outline (evaluator's HOG face, upsampled once), below the nose, near-black and
    colourless (YCrCb: Y < 60, |Cr - 128| < 12, |Cb - 128| < 12)."""
    import cv2

    from pipeline.evaluation.faces import detect_faces

    out = np.zeros(frame.shape[:2], bool)
    faces = detect_faces(frame, 1)
    if not faces:
        return out
    lm = faces[0].landmarks
    jaw = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(jaw, [lm[0:17].astype(np.int32)], 1)
    ycc = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb).astype(np.int16)
    rows = np.arange(frame.shape[0])[:, None]
    return (
        (jaw > 0)
        & (rows > lm[33, 1])
        & (ycc[..., 0] < 60)
        & (np.abs(ycc[..., 1] - 128) < 12)
        & (np.abs(ycc[..., 2] - 128) < 12)
    )


@pytest.mark.slow
def test_microphone_in_hamilton_stays_original(cfg, tmp_path):
    """hamilton_short_clip.mp4, 5.4-7.0 s: a black microphone covers the singer's mouth and chin. With the
    default masks (landmarks + occlusion) its pixels keep their original values; with the landmark mask
    alone the swapped face is painted over most of it (so the check can fail)."""
    import ffmpeg

    from pipeline.run import swap_video
    from tests.conftest import VIDEOS
    from tests.media_checks import decode_all
    from tests.media_making import run_ffmpeg

    clip = tmp_path / "hamilton_mic.mp4"
    source = ffmpeg.input(str(VIDEOS / "hamilton_short_clip.mp4"), ss="5.4", t="1.6")
    run_ffmpeg(source.output(str(clip), vcodec="libx264", crf=12, acodec="copy"))
    changed = {}
    for name, types in (("occlusion", ["landmarks", "occlusion"]), ("landmarks", ["landmarks"])):
        local = copy.deepcopy(cfg)
        local["executor"] = "local"
        local["mask"]["types"] = types
        out = tmp_path / f"{name}.mp4"
        swap_video(clip, FACES / "obama_a.jpg", out, local, progress=False)
        total = moved = 0
        for before, after in zip(decode_all(clip), decode_all(out)):
            mic = microphone_pixels(before)
            total += int(mic.sum())
            moved += int((np.abs(after.astype(np.int16) - before).max(-1)[mic] > 20).sum())
        changed[name] = moved / max(total, 1)
        assert total > 2000, "the clip should show the microphone over the face"
    assert changed["occlusion"] < 0.08, changed
    assert changed["landmarks"] > 0.3, changed


def test_a_face_mask_does_not_depend_on_its_batch(face, cfg):
    """The same face alone and next to a smaller, occluded copy of itself gets the same mask."""
    covered, _ = microphone(face.crop, face.landmarks68)
    lm = face.landmarks68.astype(np.float64)
    small = (lm - 128.0) * 0.6 + 128.0
    alone = occlusion_masks(face.crop[None], lm[None], cfg)[0]
    together = occlusion_masks(np.stack([face.crop, covered]), np.stack([lm, small]), cfg)[0]
    assert torch.equal(alone, together)


def test_target_glasses_stay_when_asked(cfg):
    """mask.target_glasses=keep: the frames of a target wearing glasses are not pasted over; paste: they
    are (only colour occluders are found, which thin frames are not)."""
    import copy

    from stages.occluders import glasses_map

    face = prepare_source(FACES / "sundar_pichai_a.jpg", cfg)
    lm = face.landmarks68[None].astype(np.float64)
    frames, _, found = glasses_map(face.crop, face.landmarks68)
    assert found
    keep = copy.deepcopy(cfg)
    keep["mask"]["target_glasses"] = "keep"
    paste = copy.deepcopy(cfg)
    paste["mask"]["target_glasses"] = "paste"
    kept = occlusion_masks(face.crop[None], lm, keep)[0].numpy()
    pasted = occlusion_masks(face.crop[None], lm, paste)[0].numpy()
    on_frames = frames > 0
    assert kept[on_frames].mean() < 0.1
    assert pasted[on_frames].mean() > kept[on_frames].mean() + 0.3


def test_separable_filters_match_the_square_pools():
    """max_filter (OpenCV dilation) and box_mean (two 1-D passes) give the k x k pools' values, borders
    included."""
    import torch.nn.functional as F

    from stages.mask import box_mean, max_filter

    x = torch.rand(3, 1, 40, 33, generator=torch.Generator().manual_seed(0))
    for k in (1, 5, 17):
        assert torch.equal(max_filter(x, k), F.max_pool2d(x, k, 1, k // 2))
        square = F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
        assert torch.allclose(box_mean(x, k), square, atol=1e-6)
