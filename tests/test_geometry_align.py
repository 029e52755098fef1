"""Geometry helpers and the align stage: transforms round-trip, crops land where the matrix says."""

from __future__ import annotations

import numpy as np

from stages.align import AlignStage
from stages.geometry import (
    GHOST_POSE_TEMPLATES,
    crop_template,
    estimate_similarity,
    invert_affine,
    transform_points,
    warp_crops,
)
from stages.types import FaceRecord, FrameBatch


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]], np.float32
    )


def test_estimate_similarity_recovers_a_known_transform():
    m = similarity(1.7, 23.0, 40.0, -12.0)
    src = np.random.default_rng(1).uniform(0, 300, size=(5, 2)).astype(np.float32)
    est = estimate_similarity(src, transform_points(src, m))
    assert np.allclose(est, m, atol=1e-3)


def test_points_round_trip_through_crop():
    m = similarity(0.8, -15.0, 30.0, 50.0)
    pts = np.random.default_rng(2).uniform(0, 500, size=(68, 2)).astype(np.float32)
    back = transform_points(transform_points(pts, m), invert_affine(m))
    assert np.abs(back - pts).max() < 1e-3


def test_template_fits_in_crop():
    t = crop_template(256, 0.75, 0.5)
    assert t.shape == (5, 2) and (t > 32).all() and (t < 224).all()
    assert t[0, 0] < t[1, 0] and t[2, 1] < t[3, 1]  # eyes left to right, nose above mouth


def test_crop_pixels_land_where_the_matrix_says():
    """A dot drawn in the frame appears in the crop at M·p (within 1 px), and maps back (align→inverse)."""
    h, w = 360, 640
    m = similarity(1.3, 12.0, -150.0, -40.0)
    rng = np.random.default_rng(3)
    for _ in range(5):
        frame = np.zeros((1, h, w, 3), np.uint8)
        p = rng.uniform([200, 80], [300, 180]).astype(np.float32)
        x, y = int(round(p[0])), int(round(p[1]))
        frame[0, y - 1 : y + 2, x - 1 : x + 2] = 255
        crop = warp_crops(frame, [0], [m], 256)[0, :, :, 0].astype(np.float64)
        assert crop.sum() > 0
        ys, xs = np.mgrid[0:256, 0:256]
        centre = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        expected = transform_points(np.array([[x, y]], np.float32), m)[0]
        assert np.linalg.norm(centre - expected) < 1.0
        assert (
            np.linalg.norm(transform_points(centre[None].astype(np.float32), invert_affine(m))[0] - [x, y])
            < 1.0
        )


def test_align_stage_crops_selected_faces_only(base_cfg):
    frames = np.random.default_rng(4).integers(0, 256, size=(2, 240, 320, 3), dtype=np.uint8)
    template = crop_template(256, 0.75, 0.5)
    # Five points such that the face is a scaled, shifted template.
    pts = template * 0.5 + np.array([60, 40], np.float32)
    box = np.array([40, 20, 200, 200], np.float32)
    faces = [[FaceRecord(box, 0.99, pts)], [FaceRecord(box, 0.99, pts, selected=False)]]
    batch = FrameBatch("v", np.arange(2), np.arange(2), frames, faces)
    cfg = {**base_cfg, "align": {**base_cfg["align"], "min_crop_size": 256}}
    out = AlignStage(cfg)(batch)
    f0, f1 = out.faces[0][0], out.faces[1][0]
    assert f0.crop.shape == (256, 256, 3) and f0.crop.dtype == np.uint8
    assert np.allclose(transform_points(pts, f0.affine), template, atol=1e-2)
    assert f1.crop is None and f1.affine is None


def test_a_face_small_in_the_frame_gets_a_smaller_crop_of_the_same_cut(base_cfg):
    """``align.min_crop_size``: the side at which a crop pixel spans a frame pixel, rounded up to
    ``crop_step``, between ``min_crop_size`` and ``crop_size``; the transform is the full one scaled, so
    the crop is the full crop resampled (the same cut, fewer pixels)."""
    from scipy.ndimage import gaussian_filter

    from stages.align import face_crop_size

    rng = np.random.default_rng(6)
    texture = gaussian_filter(rng.uniform(0, 255, (480, 640, 3)), sigma=(2, 2, 0))
    frame = np.clip((texture - texture.mean()) / texture.std() * 40 + 128, 0, 255).astype(np.uint8)
    align = {**base_cfg["align"], "min_crop_size": 96, "crop_step": 32}
    template = crop_template(256, align["face_scale"], align["centre_y"])
    faces, expected = [], []
    for scale, side in ((0.3, 96), (0.55, 160), (0.62, 160), (0.7, 192), (1.0, 256), (1.6, 256)):
        # a face that is the template at ``scale`` frame pixels per crop pixel: 1:1 at 256 * scale
        pts = (template * scale + np.array([300 - 128 * scale, 240 - 128 * scale], np.float32)).astype(
            np.float32
        )
        faces.append(FaceRecord(np.array([0, 0, 10, 10], np.float32), 0.99, pts))
        expected.append(side)
        m = estimate_similarity(pts, template)
        assert face_crop_size(m, align) == side
        assert face_crop_size(m, {**align, "min_crop_size": 256}) == 256
        assert face_crop_size(m, {**align, "template": "ghost"}) == 256
    batch = FrameBatch("v", np.zeros(len(faces)), np.zeros(len(faces)), np.stack([frame] * len(faces)))
    batch.faces = [[f] for f in faces]
    AlignStage({**base_cfg, "align": align})(batch)
    full = {**base_cfg, "align": {**align, "min_crop_size": 256}}
    for face, side in zip(faces, expected):
        assert face.crop.shape == (side, side, 3)
        small_template = crop_template(side, align["face_scale"], align["centre_y"])
        assert np.allclose(transform_points(face.points5, face.affine), small_template, atol=1e-2)
        big = FaceRecord(face.box, face.score, face.points5)
        AlignStage(full)(FrameBatch("v", np.zeros(1), np.zeros(1), frame[None], [[big]]))
        k = side / 256
        resampled = warp_crops(big.crop[None], [0], [np.array([[k, 0, 0], [0, k, 0]], np.float32)], side)[0]
        inner = slice(side // 8, side - side // 8)  # the crops agree where no frame edge is involved
        diff = np.abs(resampled.astype(float) - face.crop)[inner, inner]
        assert diff.mean() < 2.0, (side, diff.mean())


def test_ghost_crop_pasted_back_unchanged_gives_the_frame(base_cfg):
    """``align.template=ghost``: the crop goes back through the inverse of its own transform (the blend
    stage); a swap that changes nothing leaves the face region as it was, up to two resamplings."""
    from scipy.ndimage import gaussian_filter

    from stages.blend import BlendStage

    cfg = {**base_cfg, "align": {**base_cfg["align"], "template": "ghost"}}
    rng = np.random.default_rng(5)
    # Smooth texture of std 40 (a face-like image has little energy near Nyquist, which two bilinear
    # steps blur): unchanged 0.64 mean error; a crop pasted 0.25 px off gives 1.26, 0.5 px off 2.1.
    texture = gaussian_filter(rng.uniform(0, 255, (360, 480, 3)), sigma=(3, 3, 0))
    frame = np.clip((texture - texture.mean()) / texture.std() * 40 + 128, 0, 255).astype(np.uint8)
    pts = GHOST_POSE_TEMPLATES[2] * 1.3 + np.array([170, 90], np.float32)
    face = FaceRecord(np.array([150, 80, 330, 260], np.float32), 0.99, pts.astype(np.float32))
    batch = FrameBatch("v", np.arange(1), np.arange(1), frame[None].copy(), [[face]])
    AlignStage(cfg)(batch)
    frontal_256 = (GHOST_POSE_TEMPLATES[2] * 2 + 0.5) * 256 / 224 - 0.5  # the 224 template, resized
    assert np.abs(transform_points(pts, face.affine) - frontal_256).max() < 0.05
    face.swapped, face.mask = face.crop.copy(), np.ones((256, 256), np.float32)
    BlendStage(cfg)(batch)
    assert face.pasted
    diff = np.abs(batch.frames[0].astype(float) - frame)[100:250, 180:320]
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_warp_affine_image_matches_kornia_with_pixel_centres_at_integers():
    """OpenCV's warp (what the align and blend stages use) against kornia's ``align_corners=True`` warp:
    the same pixel convention, values within 1e-4, both borders."""
    import kornia
    import torch

    from stages.geometry import warp_affine_image

    rng = np.random.default_rng(0)
    image = rng.random((70, 90, 4), dtype=np.float32)
    for _ in range(5):
        angle, scale = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2.0)
        m = np.array(
            [
                [scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(-20, 20)],
                [scale * np.sin(angle), scale * np.cos(angle), rng.uniform(-20, 20)],
            ],
            np.float32,
        )
        for border, padding in (("replicate", "border"), ("zeros", "zeros")):
            ours = warp_affine_image(image, m, (64, 48), border)
            theirs = kornia.geometry.transform.warp_affine(
                torch.from_numpy(image).permute(2, 0, 1)[None],
                torch.from_numpy(m)[None],
                (64, 48),
                mode="bilinear",
                padding_mode=padding,
                align_corners=True,
            )[0].permute(1, 2, 0)
            assert ours.shape == (64, 48, 4) and ours.dtype == np.float32
            assert np.abs(ours - theirs.numpy()).max() < 1e-4, border
    shifted = warp_affine_image(image, np.array([[1, 0, 2], [0, 1, 3]], np.float32), (70, 90), "zeros")
    assert np.array_equal(shifted[3:, 2:], image[:-3, :-2]) and not shifted[:3].any()


def test_swap_groups_split_where_a_track_changes_side():
    """A batch with several crop sides is worked side by side; where a track's side changes, later frames
    start new groups, so a stage running the groups in order meets each track's faces in frame order."""
    import pytest

    from stages.types import swap_groups, swap_inputs

    def face(track: int, side: int) -> FaceRecord:
        rec = FaceRecord(np.zeros(4, np.float32), 1.0, np.zeros((5, 2), np.float32), track_id=track)
        rec.crop = np.zeros((side, side, 3), np.uint8)
        rec.landmarks68 = np.zeros((68, 2), np.float32)
        rec.affine = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
        return rec

    sides = [(128, 256), (128, 256), (160, 256), (160, 256)]  # track 0 grows in frame 2
    faces = [[face(0, a), face(1, b)] for a, b in sides]
    batch = FrameBatch("v", np.arange(4), np.arange(4), np.zeros((4, 8, 8, 3), np.uint8), faces)
    groups = swap_groups(batch)
    assert len(groups) == 4
    expected = [
        [faces[0][0], faces[1][0]],
        [faces[0][1], faces[1][1]],
        [faces[2][0], faces[3][0]],
        [faces[2][1], faces[3][1]],
    ]
    for (members, crops, landmarks), want in zip(groups, expected):
        assert [id(f) for f in members] == [id(f) for f in want]
        assert crops.shape == (2, want[0].crop.shape[0], want[0].crop.shape[0], 3) and landmarks.shape == (
            2,
            68,
            2,
        )
    with pytest.raises(ValueError, match="align.crop_size is 256"):
        swap_inputs(batch, 256)
    one_side = FrameBatch("v", np.arange(2), np.arange(2), np.zeros((2, 8, 8, 3), np.uint8))
    one_side.faces = [[face(0, 256), face(1, 256)], [face(0, 256)]]
    members, crops, _ = swap_inputs(one_side, 256)
    assert [id(f) for f in members] == [id(f) for f in (one_side.faces[0] + one_side.faces[1])]


def test_ffhq_alignment_is_the_ffhq_square_and_follows_the_face():
    """``align.template=ffhq``: the square FFHQ's alignment cuts (edges on the crop's pixel edges), the eyes
    level and centred, 1/4 of the side apart for FFHQ's usual proportions, and the same crop whatever the
    face's position, size and roll."""
    from stages.geometry import ffhq_alignment

    size = 1024
    # an upright face: eyes 100 px apart, mouth 100 px below their midpoint
    pts = np.array([[300, 400], [400, 400], [350, 450], [320, 500], [380, 500]], np.float64)
    m = ffhq_alignment(pts, size)
    eyes = transform_points(pts[:2].astype(np.float32), m.astype(np.float32))
    assert (
        abs(eyes[0, 1] - eyes[1, 1]) < 1e-3 and abs((eyes[0, 0] + eyes[1, 0]) / 2 - (size / 2 - 0.5)) < 1e-3
    )
    assert (
        abs((eyes[1, 0] - eyes[0, 0]) - size / 4) < 1e-3
    )  # |x| = max(2 * 100, 1.8 * 100): side 4 eye distances
    # the square: centred 0.1 of the eye-to-mouth vector below the eyes' midpoint (350, 410), half-side 200;
    # its corner (150, 210) (pixel centres at integers) lands on the crop's pixel edge corner (-0.5, -0.5)
    corner = np.array([[150.0, 210.0]], np.float32)
    assert np.allclose(transform_points(corner, m.astype(np.float32)), [[-0.5, -0.5]], atol=1e-3)
    # position, scale and roll of the face do not change where its points land
    moved = transform_points(pts.astype(np.float32), similarity(1.7, 23.0, 40.0, -12.0)).astype(np.float64)
    a = transform_points(pts.astype(np.float32), m.astype(np.float32))
    b = transform_points(moved.astype(np.float32), ffhq_alignment(moved, size).astype(np.float32))
    assert np.abs(a - b).max() < 1e-2


def test_align_stage_cuts_ffhq_crops(base_cfg):
    frames = np.random.default_rng(7).integers(0, 256, size=(1, 600, 700, 3), dtype=np.uint8)
    pts = np.array([[300, 300], [380, 300], [340, 340], [315, 380], [365, 380]], np.float32)
    face = FaceRecord(np.array([250, 220, 430, 420], np.float32), 0.99, pts)
    cfg = {**base_cfg, "align": {**base_cfg["align"], "template": "ffhq", "crop_size": 256}}
    AlignStage(cfg)(FrameBatch("v", np.arange(1), np.arange(1), frames, [[face]]))
    assert face.crop.shape == (256, 256, 3)
    eyes = transform_points(pts[:2], face.affine)
    assert abs((eyes[1, 0] - eyes[0, 0]) - 64) < 1e-2
