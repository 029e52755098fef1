"""Classic swap stage (stages/swap_classic.py): the paste mask, batch independence, colour options, strong
poses, selected faces only, smoothing along a track, turned faces and a turned source."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from stages.face_warp import (
    MIRROR_BAND,
    control_points,
    far_half_weight,
    mirror_weight,
    piecewise_affine_grid,
    signed_turn,
    source_shape_landmarks,
)
from stages.geometry import points5_from_68
from stages.mask_geometry import INNER_LIP, face_masks, hull_points
from stages.source_face import SourceFace, make_source_face
from stages.swap_classic import ClassicSwapStage
from stages.types import FaceRecord, FrameBatch
from tests.classic_fixtures import S
from tests.classic_fixtures import turned_points5 as _turned_points5
from tests.conftest import DATA


def _polygon_mask(poly: np.ndarray) -> np.ndarray:
    """``(S, S) bool``: pixel centres inside the closed polygon ``(P, 2)`` (even-odd rule)."""
    from skimage.measure import points_in_poly

    ys, xs = np.mgrid[0:S, 0:S]
    return points_in_poly(np.stack([xs.ravel(), ys.ravel()], 1), poly).reshape(S, S)


def _convex(poly: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull

    return poly[ConvexHull(poly).vertices]


def test_mask_properties(cfg, targets):
    lm = targets["crop_lm"]
    masks = face_masks(lm, cfg).numpy()
    assert masks.shape == (len(lm), S, S) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    for f in range(len(lm)):
        m = masks[f]
        hull = _polygon_mask(_convex(hull_points(lm[f])))
        assert (m[~hull] == 0).all(), "mask leaks outside the face hull"
        # deep inside the face: nose bridge, nose tip, cheeks
        for k in (28, 30, 31, 35):
            x, y = np.round(lm[f, k]).astype(int)
            assert m[y, x] == pytest.approx(1.0, abs=1e-6), f"mask not 1 at landmark {k}"
        # the brows are covered (the seam lies on the forehead, not on the brows); their outer ends come
        # close to the face contour at the temples
        bx, by = np.round(lm[f, 19:25]).astype(int).T
        assert m[by, bx].min() > 0.95
        bx, by = np.round(lm[f, 17:27]).astype(int).T
        assert m[by, bx].mean() > 0.85
        # the hull ramp is smooth: no hard edge away from the mouth hole
        gy, gx = np.gradient(m)
        grad = np.hypot(gx, gy)
        mouth = lm[f, 48:68]
        near_mouth = np.zeros_like(m, dtype=bool)
        x0, y0 = np.floor(mouth.min(0) - 8).astype(int)
        x1, y1 = np.ceil(mouth.max(0) + 8).astype(int)
        near_mouth[max(y0, 0) : y1, max(x0, 0) : x1] = True
        assert grad[~near_mouth].max() < 0.1
        assert grad.max() < 1.0  # the mouth hole is feathered too


def test_mask_keeps_the_open_mouth_of_the_target(cfg, targets):
    lm = targets["crop_lm"]
    f = targets["keys"].index(40)
    opening = np.linalg.norm(lm[f, 62] - lm[f, 66])
    assert opening > 10, "test frame should have the mouth open"
    m = face_masks(lm[f : f + 1], cfg).numpy()[0]
    inner = _polygon_mask(lm[f, INNER_LIP])
    assert inner.sum() > 100
    assert (m[inner] == 0).all()
    # without keep_inner_mouth the mouth is pasted over
    off = {**cfg, "classic": {**cfg["classic"], "keep_inner_mouth": False}}
    m_off = face_masks(lm[f : f + 1], off).numpy()[0]
    assert m_off[inner].mean() > 0.9


def _swap(stage: ClassicSwapStage, targets: dict, order: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return stage.swap(targets["crops"][order], targets["crop_lm"][order])


def test_output_does_not_depend_on_batch_composition(stage, targets):
    n = len(targets["keys"])
    full_sw, full_m = _swap(stage, targets, list(range(n)))
    assert full_sw.dtype == np.uint8 and full_m.dtype == np.float32
    for order in ([1], [2, 0], [0, 2, 1, 1], [2]):
        sw, m = _swap(stage, targets, order)
        for i, j in enumerate(order):
            assert np.array_equal(sw[i], full_sw[j]) and np.array_equal(m[i], full_m[j])


def test_colour_transfer_none_keeps_source_colours(cfg, source, targets):
    none = {**cfg, "classic": {**cfg["classic"], "color_transfer": "none"}}
    plain = ClassicSwapStage(none, source)
    lab = ClassicSwapStage(cfg, source)
    sw_none, m_none = plain.swap(targets["crops"][:1], targets["crop_lm"][:1])
    sw_lab, m_lab = lab.swap(targets["crops"][:1], targets["crop_lm"][:1])
    assert np.array_equal(m_none, m_lab)
    inside = m_lab[0] > 0.5
    assert np.abs(sw_none[0][inside].astype(int) - sw_lab[0][inside].astype(int)).mean() > 2.0


def test_strong_pose_and_degenerate_landmarks_never_give_nan(stage, source):
    rng = np.random.default_rng(0)
    lm = source.landmarks68.astype(np.float64)
    centre = lm[30]
    faces = []
    for yaw in (0.3, 0.6, 0.85):
        # squash the image-left half of the face towards the nose and shift the nose aside: a strong 3/4 view
        squashed = lm.copy()
        left = squashed[:, 0] < centre[0]
        squashed[left, 0] = centre[0] + (squashed[left, 0] - centre[0]) * (1.0 - yaw)
        squashed[27:36, 0] -= 25.0 * yaw
        squashed += rng.normal(0.0, 2.0, squashed.shape)
        faces.append(squashed)
    faces.append(lm + rng.normal(0.0, 12.0, lm.shape))  # folded triangles everywhere
    faces.append(np.full_like(lm, 128.0))  # all points on one spot
    faces.append(np.full_like(lm, np.nan))
    crops = np.repeat(source.crop[None], len(faces), 0)
    sw, m = stage.swap(crops, np.stack(faces).astype(np.float32))
    assert sw.shape == (len(faces), S, S, 3)
    assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0
    assert (m[-2:] == 0).all(), "a face without usable landmarks must not be pasted"
    assert (m[:3].reshape(3, -1).max(1) == 1.0).all()


def test_stage_fills_selected_faces_only(cfg, stage, targets):
    n = len(targets["keys"])
    faces = []
    for i in range(n):
        rec = FaceRecord(
            box=np.zeros(4, np.float32),
            score=1.0,
            points5=points5_from_68(targets["lm"][i]),
            landmarks68=targets["lm"][i],
            affine=targets["affine"][i],
            crop=targets["crops"][i],
            selected=i != 1,
        )
        faces.append([rec])
    batch = FrameBatch("v", np.arange(n), np.arange(n), targets["frames"], faces)
    out = stage(batch)
    assert out is batch and stage.flush() == []
    assert faces[1][0].swapped is None and faces[1][0].mask is None
    alone_sw, alone_m = stage.swap(targets["crops"][[0, 2]], targets["crop_lm"][[0, 2]])
    for k, i in enumerate((0, 2)):
        face = faces[i][0]
        assert face.swapped.shape == (S, S, 3) and face.swapped.dtype == np.uint8
        assert face.mask.shape == (S, S) and face.mask.dtype == np.float32
        assert np.array_equal(face.swapped, alone_sw[k]) and np.array_equal(face.mask, alone_m[k])
    # frames are not written by the swap stage
    assert np.array_equal(out.frames, targets["frames"])


def test_colour_statistics_are_smoothed_along_a_track(cfg, source, targets):
    """The same face brightened by 40 in the next frame: its colour match moves only 1 - a of the way
    (a = classic.color_smoothing) on that track; a new track, a gap or a scene cut takes it at once.
    With the shading transfer off: that transfer follows each frame's own pixels, as the frame does."""
    cfg = {**cfg, "classic": {**cfg["classic"], "shading_sigma": 0.0}}
    crop = targets["crops"][0]
    bright = np.clip(crop.astype(np.int16) + 40, 0, 255).astype(np.uint8)

    def run(
        stage: ClassicSwapStage, crops: list[np.ndarray], indices: list[int], tracks: list[int], frames=None
    ):
        out = []
        for k, (c, i, t) in enumerate(zip(crops, indices, tracks)):
            rec = FaceRecord(
                box=np.zeros(4, np.float32),
                score=1.0,
                points5=points5_from_68(targets["lm"][0]),
                landmarks68=targets["lm"][0],
                affine=targets["affine"][0],
                crop=c,
                track_id=t,
            )
            frame = targets["frames"][:1] if frames is None else frames[k][None]
            stage(FrameBatch("v", np.array([i]), np.array([i]), frame, [[rec]]))
            out.append(rec.swapped.astype(np.float64).mean())
        return out

    a = cfg["classic"]["color_smoothing"]
    dark, fresh = run(ClassicSwapStage(cfg, source), [crop, bright], [0, 5], [0, 7])
    _, smoothed = run(ClassicSwapStage(cfg, source), [crop, bright], [0, 1], [0, 0])
    assert fresh - dark > 15
    assert smoothed - dark == pytest.approx((1 - a) * (fresh - dark), rel=0.25)
    _, gap = run(ClassicSwapStage(cfg, source), [crop, bright], [0, 2], [0, 0])
    assert gap == pytest.approx(fresh, abs=0.5)
    other = np.zeros_like(targets["frames"][0])
    _, cut = run(ClassicSwapStage(cfg, source), [crop, bright], [0, 1], [0, 0], [targets["frames"][0], other])
    assert cut == pytest.approx(fresh, abs=0.5)


def test_even_source_light_is_a_share(cfg, source):
    bad = {**cfg, "classic": {**cfg["classic"], "even_source_light": 1.5}}
    with pytest.raises(ValueError, match="even_source_light"):
        ClassicSwapStage(bad, source)


def test_low_resolution_source_is_reported():
    from pipeline.backends import low_resolution_note

    crop = np.zeros((68, 2))
    crop[36:42, 0], crop[42:48, 0] = 100.0, 160.0
    assert low_resolution_note("big.jpg", crop * 1.2, crop) is None
    note = low_resolution_note("small.jpg", crop * 0.3, crop)
    assert "small.jpg" in note and "\n" not in note


def test_turned_faces_keep_their_own_face(cfg, source, targets):
    """The same target crop under three five-point sets: frontal (the whole paste), half-way through the
    fade (half of it), turned past it (nothing pasted, the frame keeps its face)."""
    stage = ClassicSwapStage(cfg, source)
    turns = (0.0, 0.4, 0.6)
    faces = []
    for turn in turns:
        rec = FaceRecord(
            box=np.zeros(4, np.float32),
            score=1.0,
            points5=_turned_points5(turn, 0.3, 60.0),
            landmarks68=targets["lm"][0],
            affine=targets["affine"][0],
            crop=targets["crops"][0],
        )
        faces.append([rec])
    n = len(turns)
    frames = np.repeat(targets["frames"][:1], n, axis=0)
    stage(FrameBatch("v", np.arange(n), np.arange(n), frames, faces))
    whole = faces[0][0].mask
    assert whole.max() == 1.0
    assert np.allclose(faces[1][0].mask, 0.5 * whole, atol=1e-6)
    assert faces[2][0].mask.max() == 0.0
    bad = copy.deepcopy(cfg)
    bad["classic"]["turn_fade"] = [0.45, 0.35]
    with pytest.raises(ValueError, match="classic.turn_fade"):
        ClassicSwapStage(bad, source)


def test_turned_source_far_half_comes_from_its_near_half(cfg, landmarker, targets):
    """kit_harington_b is turned (nose 0.3 eye distances toward the image-left eye): its image-left half is
    foreshortened. Painted green there, the green is pasted with the mirroring off; with it, none reaches the
    target where the warp stretches that half (:func:`mirror_weight`): there it is the near half mirrored."""
    image = np.asarray(Image.open(DATA / "faces" / "kit_harington_b.jpeg").convert("RGB"))
    lm = landmarker(image)
    # green is no skin (it would be taken for hair), and evening the light would carry it to the other half
    keep = {"source_hair": "keep", "source_glasses": "keep", "even_source_light": 0.0}
    plain = {**cfg, "classic": {**cfg["classic"], "color_transfer": "none", "shading_sigma": 0.0, **keep}}
    src = make_source_face(image, points5_from_68(lm), lm, plain)
    slm = np.asarray(src.landmarks68, np.float64)
    assert signed_turn(points5_from_68(slm)) < -0.2
    painted = src.crop.copy()
    painted[:, : int(slm[27:31, 0].mean() - 0.1 * np.linalg.norm(slm[45] - slm[36]))] = (0, 255, 0)
    src = SourceFace(crop=painted, landmarks68=src.landmarks68)
    far = far_half_weight(targets["crop_lm"][:1], S, -1.0, MIRROR_BAND)[0].numpy() == 1.0

    lm = targets["crop_lm"][:1].astype(np.float64)
    stage = ClassicSwapStage(plain, src)
    shaped = source_shape_landmarks(lm, src.landmarks68, float(plain["classic"]["shape_transfer"]))
    grid = piecewise_affine_grid(stage.src_points, control_points(shaped, S), stage.triangles, S)
    masks = face_masks(lm, plain)
    stretched = mirror_weight(grid, masks, torch.from_numpy(far[None]).float())[0].numpy() > 0.9

    def green(config) -> np.ndarray:
        sw, mask = ClassicSwapStage(config, src).swap(targets["crops"][:1], targets["crop_lm"][:1])
        px = sw[0].astype(int)
        return (px[..., 1] > 200) & (px[..., 0] < 60) & (px[..., 2] < 60) & (mask[0] > 0.5)

    off = {**plain, "classic": {**plain["classic"], "mirror_turned_source": [0.9, 1.0]}}
    was, now = green(off), green(plain)
    assert (was & stretched).sum() > 400  # the far cheek and the nose's far side, painted
    assert not now[stretched].any()  # mirrored there
    assert now.sum() < 0.5 * was.sum()  # elsewhere (the far eye, less stretched) the far half stays
    bad = {**plain, "classic": {**plain["classic"], "mirror_turned_source": [0.2, 0.1]}}
    with pytest.raises(ValueError, match="mirror_turned_source"):
        ClassicSwapStage(bad, src)


def test_a_small_face_swapped_at_its_own_size_pastes_the_same_face(cfg, source, targets):
    """A face small in the frame is cut to a smaller crop (``align.min_crop_size``) and swapped there,
    sampling the 256 px source crop directly: pasted back, it is the face the full crop gives, up to
    resampling (the frame has no finer detail than the smaller crop)."""
    import cv2

    from stages.align import AlignStage
    from stages.blend import BlendStage

    k = 0.4  # liveportrait_d20 at 192 px: eyes about 35 px apart, a 160 px crop at 1:1
    frame = cv2.resize(targets["frames"][0], None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    lm = (targets["lm"][0] + 0.5) * k - 0.5

    def pasted(min_side: int) -> tuple[np.ndarray, int]:
        run = copy.deepcopy(cfg)
        run["align"]["min_crop_size"] = min_side
        face = FaceRecord(np.zeros(4, np.float32), 1.0, points5_from_68(lm), landmarks68=lm, track_id=0)
        batch = FrameBatch("small", np.arange(1), np.arange(1), frame[None].copy(), [[face]])
        AlignStage(run)(batch)
        side = face.crop.shape[0]
        ClassicSwapStage(run, source)(batch)
        BlendStage(run)(batch)
        assert face.pasted
        return batch.frames[0].astype(np.float64), side

    small, small_side = pasted(128)
    full, full_side = pasted(256)
    assert (small_side, full_side) == (160, 256)
    changed = np.abs(full - frame).max(-1) > 8  # where the swap changed the frame
    assert changed.sum() > 2000
    diff = np.abs(small - full).max(-1)[changed]
    assert diff.mean() < 3.0 and np.percentile(diff, 99) < 16, (diff.mean(), np.percentile(diff, 99))
