"""The classic swap's source face (stages/source_face.py): aligned like a target face, mirrored about its
midline, its one-sided light evened out, a fringe-covered brow told from one that shows."""

from __future__ import annotations

import cv2
import numpy as np

from stages.colour_match import skin_weights
from stages.face_warp import MIRROR_68
from stages.geometry import crop_template, estimate_similarity, points5_from_68
from stages.occluders import BROWS
from stages.source_face import brow_covered, even_light, mirror_face
from tests.classic_fixtures import S


def test_make_source_face_aligns_like_the_align_stage(cfg, source):
    assert source.crop.shape == (S, S, 3) and source.crop.dtype == np.uint8
    assert source.landmarks68.shape == (68, 2) and source.landmarks68.dtype == np.float32
    tmpl = crop_template(S, cfg["align"]["face_scale"], cfg["align"]["centre_y"])
    # in crop pixels the 5 points are already aligned: the best similarity onto the template is the identity
    m = estimate_similarity(points5_from_68(source.landmarks68), tmpl)
    assert np.allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-3)


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
