"""Classic swap stage: piecewise-affine warp, paste mask, Lab colour transfer, batch independence."""

from __future__ import annotations

import copy

import av
import cv2
import kornia
import numpy as np
import pytest
import torch
from PIL import Image

from stages.colour_match import lab_transfer, skin_weights
from stages.face_warp import (
    MIRROR_68,
    MIRROR_BAND,
    control_points,
    far_half_weight,
    head_turn,
    mirror_weight,
    piecewise_affine_grid,
    sample_pixels,
    signed_turn,
    source_shape_landmarks,
    triangulate,
    turn_weight,
)
from stages.geometry import (
    crop_template,
    estimate_similarity,
    points5_from_68,
    transform_points,
    warp_crops,
)
from stages.mask_geometry import INNER_LIP, face_masks, hull_points
from stages.occluders import BROWS
from stages.source_face import SourceFace, brow_covered, even_light, make_source_face, mirror_face
from stages.swap_classic import ClassicSwapStage
from stages.types import FaceRecord, FrameBatch
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


def test_make_source_face_aligns_like_the_align_stage(cfg, source):
    assert source.crop.shape == (S, S, 3) and source.crop.dtype == np.uint8
    assert source.landmarks68.shape == (68, 2) and source.landmarks68.dtype == np.float32
    tmpl = crop_template(S, cfg["align"]["face_scale"], cfg["align"]["centre_y"])
    # in crop pixels the 5 points are already aligned: the best similarity onto the template is the identity
    m = estimate_similarity(points5_from_68(source.landmarks68), tmpl)
    assert np.allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-3)


def test_warp_is_identity_when_landmarks_coincide(source):
    pts = control_points(source.landmarks68, S)
    tri = triangulate(pts)
    grid = piecewise_affine_grid(pts, pts[None], tri, S)
    ys, xs = torch.meshgrid(
        torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
    )
    assert torch.allclose(grid[0], torch.stack([xs, ys], -1), atol=1e-3)
    img = torch.from_numpy(source.crop).permute(2, 0, 1).float()[None] / 255.0
    out = sample_pixels(img, grid)
    assert (out - img).abs().max().item() * 255.0 <= 1.0


def test_warp_maps_each_source_landmark_onto_the_target_landmark(source, targets):
    """Warp an image with a dot at every source landmark; each dot must land on the target landmark.

    One channel per landmark so neighbouring dots never merge; a dot's position is the centroid of its
    upper half (robust to the different stretch of the triangles around a vertex). The inner-lip points
    get 1.5 px: there the warp squeezes the source's open, smiling mouth into a closed target mouth (and
    the target keeps its own mouth there anyway).
    """
    src = source.landmarks68.astype(np.float64)
    pts = control_points(src, S)
    tri = triangulate(pts)
    dst_lm = targets["crop_lm"].astype(np.float64)  # real target faces, open and closed mouths
    grid = piecewise_affine_grid(pts, control_points(dst_lm, S), tri, S)
    ys, xs = torch.meshgrid(
        torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
    )
    sx = torch.from_numpy(src[:, 0]).float()[:, None, None]
    sy = torch.from_numpy(src[:, 1]).float()[:, None, None]
    dots = torch.exp(-((xs - sx) ** 2 + (ys - sy) ** 2) / (2 * 0.8**2))[None]  # (1, 68, S, S)
    warped = sample_pixels(dots, grid)  # (F, 68, S, S)
    for f in range(len(dst_lm)):
        for k in range(68):
            tx, ty = dst_lm[f, k]
            x0, x1 = int(max(tx - 4, 0)), int(min(tx + 5, S))
            y0, y1 = int(max(ty - 4, 0)), int(min(ty + 5, S))
            w = warped[f, k, y0:y1, x0:x1]
            assert w.max() > 0.5, f"dot {k} of face {f} is not near its target"
            w = (w - 0.5 * w.max()).clamp(min=0.0)
            cx = float((w * xs[y0:y1, x0:x1]).sum() / w.sum())
            cy = float((w * ys[y0:y1, x0:x1]).sum() / w.sum())
            err = float(np.hypot(cx - tx, cy - ty))
            limit = 1.5 if k in INNER_LIP else 1.0
            assert err < limit, f"landmark {k} of face {f} lands {err:.2f} px from its target"


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


def test_colour_transfer_matches_the_target_lab_mean(cfg, stage, targets):
    lm = targets["crop_lm"]
    pts = control_points(lm.astype(np.float64), S)
    grid = piecewise_affine_grid(stage.src_points, pts, stage.triangles, S)
    warped = sample_pixels(stage.src_tensor, grid)
    target = torch.from_numpy(targets["crops"]).permute(0, 3, 1, 2).float() / 255.0
    masks = face_masks(lm, cfg)

    def lab_mean(img: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        lab = kornia.color.rgb_to_lab(img[None])[0]
        return (lab * w).sum((1, 2)) / w.sum()

    for f in range(len(lm)):
        w = masks[f]
        before = (lab_mean(warped[f], w) - lab_mean(target[f], w)).abs()
        out = lab_transfer(warped[f], target[f], w)
        after = (lab_mean(out, w) - lab_mean(target[f], w)).abs()
        assert before.max() > 3.0, "source and target should differ in colour before the transfer"
        assert after.max() < 1.0, f"Lab mean after transfer is off by {after.tolist()}"


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


def test_source_shape_moves_features_but_keeps_jaw_and_openings(source, targets):
    from stages.face_warp import source_shape_landmarks

    lm = targets["crop_lm"].astype(np.float64)
    assert np.array_equal(source_shape_landmarks(lm, source.landmarks68, 0.0), lm)
    # the target's own landmarks as the source: nothing moves
    same = source_shape_landmarks(lm[:1], lm[0], 1.0)
    assert np.abs(same - lm[:1]).max() < 1e-3
    moved = source_shape_landmarks(lm, source.landmarks68, 1.0)
    assert np.array_equal(moved[:, 0:17], lm[:, 0:17])  # the jaw line (silhouette) stays
    assert np.array_equal(moved[:, 48:68], lm[:, 48:68])  # the mouth stays (expression, inner mouth)
    assert np.abs(moved[:, 27:48] - lm[:, 27:48]).max() > 1.0  # nose, eyes and brows take the source's
    for a, b in ((37, 41), (38, 40), (43, 47), (44, 46)):  # eye lids: the target's opening
        gap_t = np.linalg.norm(lm[:, a] - lm[:, b], axis=1)
        gap_m = np.linalg.norm(moved[:, a] - moved[:, b], axis=1)
        assert np.abs(gap_m - gap_t).max() < 0.35


def test_shading_transfer_takes_the_target_shading_and_keeps_source_detail():
    from stages.colour_match import gauss as _gauss
    from stages.colour_match import shading_transfer

    rng = np.random.default_rng(0)
    detail = (0.05 * rng.random((S, S, 1))).astype(np.float32).repeat(3, 2)
    src = np.clip(0.35 + detail, 0, 1).astype(np.float32)
    ramp = np.linspace(0.3, 0.7, S, dtype=np.float32)[None, :, None]
    dst = np.broadcast_to(ramp, (S, S, 3)).astype(np.float32)  # lit from the right
    w = np.ones((S, S), np.float32)
    out = shading_transfer(src, dst, w, w, sigma=20.0)
    inner = (slice(64, 192), slice(64, 192))
    # the large scale follows the target's gradient, the fine scale is the source's
    assert np.abs(_gauss(out, 10.0) - _gauss(dst, 10.0))[inner].mean() < 0.02
    assert np.abs((out - _gauss(out, 2.0)) - (src - _gauss(src, 2.0)))[inner].mean() < 0.01


def test_mirror_face_shows_each_point_its_counterpart(source):
    assert sorted(MIRROR_68) == list(range(68)) and (MIRROR_68[MIRROR_68] == np.arange(68)).all()
    lm = np.asarray(source.landmarks68, np.float64)
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float32)
    coords = np.stack([xs, ys], -1)  # each pixel holds its own (x, y)
    mirrored = mirror_face(coords, lm)
    at = np.round(lm).astype(int)
    seen = mirrored[at[:, 1], at[:, 0]]  # what the mirror shows at each point: where it was taken from
    assert np.abs(seen - lm[MIRROR_68]).max() < 1.5  # (points rounded to whole pixels)


def test_even_light_takes_away_one_sided_light_and_keeps_detail(source):
    from stages.colour_match import gauss as _gauss

    lm = np.asarray(source.landmarks68, np.float64)
    skin = skin_weights(lm[None], S)[0]
    x_mid = lm[27:31, 0].mean()
    ramp = np.clip(1.0 + 0.6 * (np.arange(S) - x_mid) / S * 2, 0.4, 1.6).astype(np.float32)
    lit = np.clip(source.crop * ramp[None, :, None], 0, 255).round().astype(np.uint8)  # lit from the right

    def sides(img: np.ndarray) -> float:  # mean luma of the right half's skin minus the left half's
        g = img.astype(np.float32).mean(-1)
        right, left = skin * (np.arange(S) > x_mid), skin * (np.arange(S) < x_mid)
        return float((g * right).sum() / right.sum() - (g * left).sum() / left.sum())

    out = even_light(lit, lm, skin, 1.0)
    assert abs(sides(lit)) > 20 and abs(sides(out)) < 0.25 * abs(sides(lit))
    # what is finer than the light stays (pores, features), and nothing away from the face moves
    fine = lambda im: im.astype(np.float32) - _gauss(im.astype(np.float32), 2.0)  # noqa: E731
    on = skin > 0
    assert np.abs(fine(out) - fine(lit))[on].mean() < 1.5
    far = cv2.distanceTransform((skin == 0).astype(np.uint8), cv2.DIST_L2, 5) > 0.1 * S  # well off the face
    assert np.abs(out.astype(int) - lit)[far].max() <= 1
    # half the strength, half the evening; none, none
    half = even_light(lit, lm, skin, 0.5)
    assert abs(sides(half) - 0.5 * (sides(lit) + sides(out))) < 0.1 * abs(sides(lit))
    assert np.abs(even_light(lit, lm, skin, 0.0).astype(int) - lit).max() <= 1


def test_even_source_light_is_a_share(cfg, source):
    bad = {**cfg, "classic": {**cfg["classic"], "even_source_light": 1.5}}
    with pytest.raises(ValueError, match="even_source_light"):
        ClassicSwapStage(bad, source)


def test_lab_stats_detail_contrast_leaves_out_the_light():
    from stages.colour_match import lab_stats

    rng = np.random.default_rng(1)
    texture = 0.03 * rng.standard_normal((S, S)).astype(np.float32)
    ramp = np.linspace(0.25, 0.75, S, dtype=np.float32)[None, :]  # lit from the right
    flat = torch.from_numpy(np.clip(0.5 + texture, 0, 1)).expand(3, S, S)
    lit = torch.from_numpy(np.clip(ramp + texture, 0, 1)).expand(3, S, S)
    w = torch.ones(S, S)
    whole, detail = lab_stats(lit, w)[1][0], lab_stats(lit, w, detail_sigma=20.0)[1][0]
    flat_detail = lab_stats(flat, w, detail_sigma=20.0)[1][0]
    assert whole > 4 * detail  # the light dominates the whole-band std
    assert abs(float(detail / flat_detail) - 1.0) < 0.15  # the detail's contrast, whatever the light
    assert torch.allclose(lab_stats(lit, w)[0], lab_stats(lit, w, detail_sigma=20.0)[0])  # means unchanged


def test_matching_blur_softens_a_sharp_source_for_a_soft_frame():
    from stages.colour_match import blur_image, detail_energy, matching_blur
    from stages.occluders import luma as _luma

    sharp = np.random.default_rng(1).random((64, 64, 3)).astype(np.float32)
    w = np.ones((64, 64), np.float32)
    soft = blur_image(sharp, 1.5)
    sigma = matching_blur(sharp, soft, w, w)
    assert 1.0 < sigma < 2.0
    matched = detail_energy(_luma(blur_image(sharp, sigma)), w)
    assert matched == pytest.approx(detail_energy(_luma(soft), w), rel=0.1)
    assert matching_blur(sharp, sharp, w, w) == 0.0
    assert matching_blur(soft, sharp, w, w) == 0.0  # a softer source is never sharpened


def test_low_resolution_source_is_reported():
    from pipeline.backends import low_resolution_note

    crop = np.zeros((68, 2))
    crop[36:42, 0], crop[42:48, 0] = 100.0, 160.0
    assert low_resolution_note("big.jpg", crop * 1.2, crop) is None
    note = low_resolution_note("small.jpg", crop * 0.3, crop)
    assert "small.jpg" in note and "\n" not in note


def test_shape_offsets_are_taken_in_the_face_frame_and_smoothed(cfg, source, targets):
    """smooth_shape hands the filter the source's shape offsets in the face's own frame (eye axis, eye
    distances): the same face moved, turned in the image plane and scaled gives the same offsets, an
    identity filter gives the shape back; along a track the stage moves them 1 - a of the way per frame."""
    from stages.face_warp import smooth_shape, source_shape_landmarks

    lm = targets["crop_lm"][0].astype(np.float64)
    shaped = source_shape_landmarks(lm[None], source.landmarks68, 1.0)[0]
    seen = []

    def record(offsets: np.ndarray) -> np.ndarray:
        seen.append(offsets.copy())
        return offsets

    assert np.allclose(smooth_shape(lm, shaped, record), shaped, atol=1e-9)
    t = np.deg2rad(20.0)
    rot = 1.3 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = smooth_shape(lm @ rot.T + [7.0, -5.0], shaped @ rot.T + [7.0, -5.0], record)
    assert np.allclose(seen[0], seen[1], atol=1e-9)
    assert np.allclose(moved, shaped @ rot.T + [7.0, -5.0], atol=1e-9)
    # the stage: the same target in two frames of one track, the second with its eyes pushed apart (as a
    # wobbling fit would): the pasted shape follows only 1 - a of the change
    stage = ClassicSwapStage(cfg, source)
    a = cfg["classic"]["shape_smoothing"]
    face = FaceRecord(box=np.zeros(4), score=1.0, points5=np.zeros((5, 2)), track_id=3)
    first = stage._smoothed_shape("v", face, 0, set())
    second = stage._smoothed_shape("v", face, 1, set())
    base = np.zeros((68, 2))
    first(base)
    jump = np.full((68, 2), 0.1)
    assert np.allclose(second(jump), (1 - a) * jump)


@pytest.mark.parametrize("light", [(1.2, 0.9, 0.5), (0.8, 0.9, 1.2)])  # warm (orange), cool (blue) light
def test_colour_transfer_keeps_dark_grey_grey(light):
    """A source photo under coloured light onto a target under neutral light: its skin takes the target's
    tone, and its dark grey parts (eyes, lashes, stubble) stay near grey instead of taking the whole shift
    and turning the complement of the light (blue under orange light, orange under blue: a shift of a and b
    by the skin's gave 7 and 17 units). In the frame zone (``skin_tone``: what the fill left of glasses
    frames) a and b become the target skin's. The same skin and the same dark grey under two lights."""
    size = 32
    skin, dark = torch.tensor([0.75, 0.62, 0.55]), torch.tensor([0.12, 0.12, 0.12])

    def image(light: torch.Tensor) -> torch.Tensor:
        img = (skin * light)[:, None, None].repeat(1, size, size)
        img[:, :8, :8] = (dark * light)[:, None, None]
        return img

    src, dst = image(torch.tensor(light)), image(torch.ones(3))
    w = torch.ones(size, size)
    w[:8, :8] = 0.0  # the colour statistics are taken on the skin only
    out = kornia.color.rgb_to_lab(lab_transfer(src, dst, w)[None])[0]
    target = kornia.color.rgb_to_lab(dst[None])[0]
    assert (out[1:, 16:, 16:].mean((1, 2)) - target[1:, 16, 16]).abs().max() < 1.0  # skin: the target's tone
    grey_ab = out[1:, :8, :8].mean((1, 2))
    assert grey_ab.abs().max() < 3.5, f"dark grey became {grey_ab.tolist()} in a/b"
    zone = torch.zeros(size, size)
    zone[:8, :8] = 1.0
    zoned = lab_transfer(src, dst, w, skin_tone=zone)
    assert torch.equal(zoned[:, 8:, 8:], lab_transfer(src, dst, w)[:, 8:, 8:])
    zone_lab = kornia.color.rgb_to_lab(zoned[None])[0][:, :8, :8].mean((1, 2))
    assert (zone_lab[1:] - target[1:, 16, 16]).abs().max() < 1.0  # the skin's a and b
    assert (zone_lab[0] - out[0, :8, :8].mean()).abs() < 0.5  # its own lightness


def _turned_points5(turn: float, angle: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """Five points of a face whose nose tip is ``turn`` eye distances off the eyes' midpoint, rotated by
    ``angle`` radians, scaled and shifted."""
    p = np.array([[0.0, 0.0], [1.0, 0.0], [0.5 + turn, 0.6], [0.15, 1.0], [0.85, 1.0]])
    c, s_ = np.cos(angle), np.sin(angle)
    return (p @ np.array([[c, s_], [-s_, c]]) * scale + shift).astype(np.float32)


def test_head_turn_and_its_fade():
    assert head_turn(_turned_points5(0.0)) == pytest.approx(0.0, abs=1e-7)
    for turn in (0.2, -0.4, 0.9):  # either side; the nose past the far eye
        for angle, scale, shift in ((0.0, 1.0, (0, 0)), (0.7, 80.0, (300, 40)), (-2.5, 12.0, (5, 9))):
            assert head_turn(_turned_points5(turn, angle, scale, shift)) == pytest.approx(abs(turn), abs=1e-5)
    fade = (0.35, 0.45)
    assert turn_weight(_turned_points5(0.3), fade) == 1.0
    assert turn_weight(_turned_points5(0.4), fade) == pytest.approx(0.5)
    assert turn_weight(_turned_points5(0.46), fade) == 0.0
    assert 0.5 < turn_weight(_turned_points5(0.38), fade) < 1.0
    eyes_on_one_point = _turned_points5(0.0)
    eyes_on_one_point[1] = eyes_on_one_point[0]
    assert turn_weight(eyes_on_one_point, fade) == 0.0


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


def test_signed_turn_and_far_half_weight(targets):
    assert signed_turn(_turned_points5(0.3, 0.7, 80.0)) == pytest.approx(0.3, abs=1e-5)
    assert signed_turn(_turned_points5(-0.2, -2.5, 12.0)) == pytest.approx(-0.2, abs=1e-5)
    lm = targets["crop_lm"][:1].astype(np.float64)
    right = far_half_weight(lm, S, 1.0, 0.3)[0].numpy()
    left = far_half_weight(lm, S, -1.0, 0.3)[0].numpy()
    inward = np.array([[12, -6], [-12, -6]])  # from the jaw line into each cheek
    cheek_l, cheek_r = np.round(lm[0, [3, 13]]).astype(int) + inward
    assert right[cheek_r[1], cheek_r[0]] == 1.0 and right[cheek_l[1], cheek_l[0]] == 0.0
    assert left[cheek_l[1], cheek_l[0]] == 1.0 and left[cheek_r[1], cheek_r[0]] == 0.0
    tip = np.round(lm[0, 30]).astype(int)  # on the midline the halves meet half-way
    assert 0.2 < right[tip[1], tip[0]] < 0.8
    assert right[tip[1], tip[0]] + left[tip[1], tip[0]] == pytest.approx(1.0)


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


def test_brow_covered_by_a_fringe_only(source):
    """A fringe filling the forehead down to a brow covers it (dlib's brow points then lie on the fringe's
    edge); hair far above the brows, or a patch at the temple end of one, does not."""
    lm = np.asarray(source.landmarks68, dtype=np.float64)
    iod = float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))
    left, right = BROWS[:5], BROWS[5:]
    rows = np.arange(S)[:, None]
    fringe = (rows < lm[BROWS, 1].max()).astype(np.float32) * np.ones((1, S), np.float32)
    assert brow_covered(fringe, lm, left) and brow_covered(fringe, lm, right)
    high = (rows < lm[BROWS, 1].min() - 0.4 * iod).astype(np.float32) * np.ones((1, S), np.float32)
    assert not brow_covered(high, lm, left) and not brow_covered(high, lm, right)
    temple = np.zeros((S, S), np.float32)
    x_end, y_end = lm[right[-1]]
    temple[int(y_end - 0.4 * iod) : int(y_end), int(x_end - 0.15 * iod) : S] = 1.0
    assert not brow_covered(temple, lm, right)
    assert not brow_covered(np.zeros((S, S), np.float32), lm, left)
