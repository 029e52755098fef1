"""Glasses and hair in aligned faces (stages/occluders.py) and what the classic swap leaves of a source photo.

Real photos of ../shared/data: glasses are found on every photo with glasses (thin wire, medium, thick
frames) and on none of the bare faces; a full fringe (john_lennon_b) covers most of the forehead of the
paste hull, a bare forehead almost none of it.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.run import prepare_source
from stages.occluders import glasses_map, hair_map
from stages.swap_classic import hull_distance, hull_points, source_visibility
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
]


@pytest.fixture(scope="module")
def faces(cfg):
    return {name: prepare_source(FACES / name, cfg) for name in sorted(set(WITH_GLASSES + BARE))}


def _maps(face):
    lm = np.asarray(face.landmarks68, np.float64)
    depth = hull_distance(hull_points(lm[None]), face.crop.shape[0])[0].numpy()
    hair = hair_map(face.crop, lm, depth)
    glasses, found = glasses_map(face.crop, lm, hair)
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


def test_fringe_is_hair_and_bare_forehead_is_not(faces):
    fringe = faces["john_lennon_b.jpg"]
    depth, hair, _, _ = _maps(fringe)
    assert hair[_forehead(fringe, depth)].mean() > 0.6
    for name in ("obama_a.jpg", "katy_perry_a.jpg", "george_clooney_b.jpg"):
        depth, hair, _, _ = _maps(faces[name])
        assert hair[_forehead(faces[name], depth)].mean() < 0.1, name


def test_source_visibility_drops_and_keeps(faces, cfg):
    import copy

    face = faces["john_lennon_a.jpg"]  # glasses and hair over the forehead
    drop = source_visibility(face, cfg)
    _, hair, glasses, _ = _maps(face)
    assert drop.shape == face.crop.shape[:2] and drop.dtype == np.float32
    assert drop[glasses > 0].mean() < 0.2 and drop[hair > 0].mean() < 0.2
    keep_cfg = copy.deepcopy(cfg)
    keep_cfg["classic"]["source_glasses"] = "keep"
    keep = source_visibility(face, keep_cfg)
    frames_only = (glasses > 0) & (hair == 0)
    assert keep[frames_only].mean() > drop[frames_only].mean() + 0.5
    keep_cfg["classic"]["source_hair"] = "keep"
    assert source_visibility(face, keep_cfg).min() == 1.0
    # a bare face is all visible inside the hull's inner part
    bare = faces["obama_a.jpg"]
    vis = source_visibility(bare, cfg)
    d = hull_distance(hull_points(np.asarray(bare.landmarks68, np.float64)[None]), 256)[0].numpy()
    assert vis[d > 10].mean() > 0.97
