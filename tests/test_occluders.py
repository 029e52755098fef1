"""Glasses and hair in aligned faces (stages/occluders.py) and what the classic swap leaves of a source photo.

Real photos of ../shared/data: glasses are found on every photo with glasses (thin wire, medium, thick
frames) and on none of the bare faces; a full fringe (john_lennon_b) covers most of the forehead of the
paste hull, a bare forehead almost none of it.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.run import prepare_source
from stages.mask_geometry import hull_distance, hull_points
from stages.occluders import BROWS, LEFT_EYE, RIGHT_EYE, glasses_map, hair_map, polygon
from stages.source_face import BROW_COVER_GROW, brow_covered, source_layers
from tests.conftest import FACES

WITH_GLASSES = ["john_lennon_a.jpg", "sundar_pichai_a.jpg", "eric_clapton_a.jpg", "eric_clapton_b.jpg"]
BARE = [
    "obama_a.jpg",
    "fairface_boy_a.jpg",
    "katy_perry_a.jpg",
    "george_clooney_b.jpg",
    "rose_leslie_b.jpg",
    "john_lennon_b.jpg",
    "compreface_woman2_a.jpg",
    "kit_harington_b.jpeg",  # deep-set eyes in a grey photo
    "george_clooney_a.jpg",  # creases around the eyes and between the brows
    "jack_dorsey_a.jpg",
    "jack_dorsey_b.jpg",  # one eye in deep stage shadow: dark, but no lens
]
SUNGLASSES = "prnet_man_sunglasses_a.jpg"


@pytest.fixture(scope="module")
def faces(cfg):
    return {name: prepare_source(FACES / name, cfg) for name in sorted({*WITH_GLASSES, *BARE, SUNGLASSES})}


def _maps(face):
    lm = np.asarray(face.landmarks68, np.float64)
    depth = hull_distance(hull_points(lm[None]), face.crop.shape[0])[0].numpy()
    hair = hair_map(face.crop, lm, depth)
    glasses, lenses, found = glasses_map(face.crop, lm, hair)
    assert not lenses.any()  # clear lenses: the eyes behind them are the face
    return depth, hair, glasses, found


def _forehead(face, depth: np.ndarray) -> np.ndarray:
    """``(S, S) bool``: the paste hull above the brows."""
    size = face.crop.shape[0]
    rows = np.arange(size)[:, None] < face.landmarks68[17:27, 1].min()
    return (depth > 0) & rows


@pytest.mark.parametrize("name", WITH_GLASSES)
def test_glasses_are_found_around_both_eyes(faces, name):
    face = faces[name]
    _, _, glasses, found = _maps(face)
    assert found
    lm = face.landmarks68
    for eye in (slice(36, 42), slice(42, 48)):
        x0, y0 = lm[eye].min(0) - 8
        x1, y1 = lm[eye].max(0) + 8
        assert glasses[int(y0) : int(y1), int(x0) : int(x1)].any(), f"no frame near an eye of {name}"
    # never on the cheeks or the chin
    assert glasses[int(lm[33, 1]) :].sum() == 0


@pytest.mark.parametrize("name", BARE)
def test_no_glasses_on_bare_faces(faces, name):
    _, _, glasses, found = _maps(faces[name])
    assert not found and not glasses.any()


def test_sunglasses_hide_both_eyes_whole(faces, cfg):
    """Dark sunglasses whose frames reach the face outline (no bridge stroke of their own) are found by their
    lenses; the whole lens, its lighter lower part too, is hidden: no smudge of it is pasted."""
    face = faces[SUNGLASSES]
    lm = np.asarray(face.landmarks68, np.float64)
    depth = hull_distance(hull_points(lm[None]), face.crop.shape[0])[0].numpy()
    _, lenses, found = glasses_map(face.crop, lm, hair_map(face.crop, lm, depth))
    assert found
    for eye in (LEFT_EYE, RIGHT_EYE):
        assert lenses[polygon(lenses.shape, lm[eye], 6.0)].mean() > 0.95
    assert lenses[int(lm[33, 1]) :].sum() == 0  # nothing below the nose
    _, visible, _ = source_layers(face, cfg)
    assert visible[_eyes(face)].max() < 0.05


def test_hidden_eyes_are_reported_in_one_line(faces, cfg):
    import copy

    from pipeline.backends import hidden_eyes_note

    note = hidden_eyes_note("shades.jpg", faces[SUNGLASSES], cfg)
    assert "shades.jpg" in note and "sunglasses" in note and "\n" not in note
    keep = copy.deepcopy(cfg)
    keep["classic"]["source_glasses"] = "keep"  # pasted as they are: nothing to report
    assert hidden_eyes_note("shades.jpg", faces[SUNGLASSES], keep) is None
    for name in ("jack_dorsey_b.jpg", "eric_clapton_a.jpg"):  # eyes in deep shadow; clear lenses
        assert hidden_eyes_note(name, faces[name], cfg) is None


def test_nothing_beyond_the_source_outline_is_pasted(cfg):
    """celeba_man_cap_a's brows sit low under his cap, and a target's paste hull reaches past his own: the
    brim and badge beyond his outline were pasted on foreheads. With source_hair=drop nothing of the crop
    beyond the source's hull shows but the brows' soft edge (with keep, all of it does); his brows show."""
    import copy

    face = prepare_source(FACES / "celeba_man_cap_a.jpg", cfg)
    lm = np.asarray(face.landmarks68, np.float64)
    _, visible, _ = source_layers(face, cfg)
    depth = hull_distance(hull_points(lm[None]), visible.shape[0])[0].numpy()
    assert visible[depth < -3].mean() < 0.01
    assert visible[depth < -9].max() < 0.01  # the brows' soft edge may reach a few px past the outline
    brows = visible[np.round(lm[17:27, 1]).astype(int), np.round(lm[17:27, 0]).astype(int)]
    assert brows.min() > 0.5
    keep = copy.deepcopy(cfg)
    keep["classic"]["source_hair"] = "keep"
    keep["classic"]["source_glasses"] = "keep"
    assert source_layers(face, keep)[1][depth < -3].min() == 1.0


def test_knitted_hat_is_not_pasted(cfg):
    """compreface_woman1_a's beanie is nearly as saturated as her skin but rough: found by texture on the
    photo, and hidden with what it encloses; her brows still show (the beanie ends above them)."""
    from stages.occluders import inter_ocular

    face = prepare_source(FACES / "compreface_woman1_a.jpg", cfg)
    lm = np.asarray(face.landmarks68, np.float64)
    _, visible, _ = source_layers(face, cfg)
    depth = hull_distance(hull_points(lm[None]), visible.shape[0])[0].numpy()
    rows = np.arange(visible.shape[0])[:, None]
    top = (depth > 0) & (rows < lm[17:27, 1].min() - 0.25 * inter_ocular(lm))
    assert visible[top].mean() < 0.05
    brows = visible[np.round(lm[17:27, 1]).astype(int), np.round(lm[17:27, 0]).astype(int)]
    assert brows.min() > 0.5
    # the colour rule alone leaves most of the band; on video frames (photo=False) texture does not count
    assert hair_map(face.crop, lm, depth).sum() < hair_map(face.crop, lm, depth, photo=True).sum()


def test_fringe_is_hair_and_bare_forehead_is_not(faces):
    fringe = faces["john_lennon_b.jpg"]
    depth, hair, _, _ = _maps(fringe)
    assert hair[_forehead(fringe, depth)].mean() > 0.6
    for name in ("obama_a.jpg", "katy_perry_a.jpg", "george_clooney_b.jpg"):
        depth, hair, _, _ = _maps(faces[name])
        assert hair[_forehead(faces[name], depth)].mean() < 0.1, name


def _eyes(face) -> np.ndarray:
    """``(S, S) bool``: both eye polygons of an aligned face."""
    shape = face.crop.shape[:2]
    return polygon(shape, face.landmarks68[LEFT_EYE]) | polygon(shape, face.landmarks68[RIGHT_EYE])


@pytest.mark.parametrize("name", WITH_GLASSES)
def test_frames_never_cover_the_eyes(faces, name):
    """Through clear lenses the eyes are the source's face: no frame pixel on them."""
    face = faces[name]
    _, _, glasses, _ = _maps(face)
    assert glasses[_eyes(face)].mean() < 0.05


def test_source_layers_fill_frames_and_drop_hair(faces, cfg):
    import copy

    cfg = copy.deepcopy(cfg)
    cfg["classic"]["even_source_light"] = 0.0  # the fill alone (the light is test_source_face's)
    face = faces["john_lennon_a.jpg"]  # glasses and hair over the forehead
    filled, drop, zone = source_layers(face, cfg)
    _, hair, glasses, _ = _maps(face)
    assert drop.shape == face.crop.shape[:2] and drop.dtype == np.float32
    assert filled.shape == face.crop.shape and filled.dtype == np.uint8
    assert drop[hair > 0].mean() < 0.2
    # the frames are filled from the skin around them and stay visible (but for the band of the brows his
    # fringe covers: their points lie on its edge, and they go with it); the eyes are untouched
    frames_only = (glasses > 0) & (hair == 0)
    lm = face.landmarks68
    iod = float(np.linalg.norm(lm[LEFT_EYE].mean(0) - lm[RIGHT_EYE].mean(0)))
    covered = np.zeros(frames_only.shape, bool)
    for brow in (BROWS[:5], BROWS[5:]):
        if brow_covered(hair, lm, brow):
            covered |= polygon(covered.shape, lm[brow], 2 * BROW_COVER_GROW * iod)
    assert covered.any()
    assert drop[frames_only & ~covered].mean() > 0.8
    changed = np.abs(filled.astype(int) - face.crop.astype(int)).max(-1) > 0
    assert changed[frames_only].mean() > 0.9 and not changed[glasses == 0].any()
    assert np.array_equal(filled[_eyes(face)], face.crop[_eyes(face)])
    # the filled frame pixels are nearer the skin around them than the frames were: luma up toward the cheeks
    cheek = face.crop[int(face.landmarks68[29, 1]) : int(face.landmarks68[33, 1]), 90:160].reshape(-1, 3)
    skin = np.median(cheek, 0)
    before = np.abs(face.crop[frames_only].astype(float) - skin).sum(-1).mean()
    after = np.abs(filled[frames_only].astype(float) - skin).sum(-1).mean()
    assert after < 0.7 * before
    # the frame zone covers the frames (less where they cross the brows) and not the eyes behind them (eyes
    # and brows take the lightness-scaled colour shift)
    assert zone.dtype == np.float32 and zone[frames_only].mean() > 0.8
    assert zone[_eyes(face)].mean() < 0.1
    keep_cfg = copy.deepcopy(cfg)
    keep_cfg["classic"]["source_glasses"] = "keep"
    kept, _, kept_zone = source_layers(face, keep_cfg)
    assert np.array_equal(kept, face.crop) and kept_zone.max() == 0.0
    keep_cfg["classic"]["source_hair"] = "keep"
    assert source_layers(face, keep_cfg)[1].min() == 1.0
    # a bare face is all visible inside the hull's inner part, and nothing is filled
    bare = faces["obama_a.jpg"]
    crop, vis, bare_zone = source_layers(bare, cfg)
    d = hull_distance(hull_points(np.asarray(bare.landmarks68, np.float64)[None]), 256)[0].numpy()
    assert vis[d > 10].mean() > 0.97 and np.array_equal(crop, bare.crop) and bare_zone.max() == 0.0
    # with the light evened out, only the face changes
    cfg["classic"]["even_source_light"] = 1.0
    evened = source_layers(bare, cfg)[0]
    moved = np.abs(evened.astype(int) - bare.crop).max(-1) > 1
    assert moved[d > 0].any() and not moved[d < -0.1 * 256].any()
