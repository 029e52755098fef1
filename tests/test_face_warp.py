"""The classic swap's face warp (stages/face_warp.py): the piecewise-affine warp, the source's face shape on
the target and its smoothing, and how far a face is turned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.face_warp import (
    control_points,
    far_half_weight,
    head_turn,
    piecewise_affine_grid,
    sample_pixels,
    signed_turn,
    triangulate,
    turn_weight,
)
from stages.mask_geometry import INNER_LIP
from stages.swap_classic import ClassicSwapStage
from stages.types import FaceRecord
from tests.classic_fixtures import S
from tests.classic_fixtures import turned_points5 as _turned_points5


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
