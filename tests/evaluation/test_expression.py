"""Expression measures (pipeline/evaluation/expression.py): Procrustes shape error, mouth and eye opening."""

from __future__ import annotations

import av
import numpy as np
import pytest

from pipeline.evaluation.expression import expression_error, procrustes_align
from pipeline.evaluation.faces import detect_faces
from tests.evaluation.conftest import VIDEO


def _face_shape() -> np.ndarray:
    """A 68-point shape: the dlib landmarks of the first frame of the clip (deterministic, real)."""
    with av.open(str(VIDEO)) as c:
        frame = next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24")
    return detect_faces(frame)[0].landmarks


def test_procrustes_expression_ignores_similarity_transforms():
    shape = _face_shape()
    angle = np.radians(25.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 1.7 * shape @ rot.T + np.array([40.0, -12.0])
    assert expression_error(moved, shape) < 1e-9
    assert np.allclose(procrustes_align(moved, shape), shape, atol=1e-9)


def test_expression_error_sees_an_open_mouth_and_no_reflection():
    shape = _face_shape()
    opened = shape.copy()
    opened[57:60] += [0.0, 8.0]  # lower outer lip down 8 px
    opened[65:68] += [0.0, 8.0]  # lower inner lip
    err = expression_error(opened, shape)
    assert 0.01 < err < 0.2
    mirrored = shape * np.array([-1.0, 1.0])  # a reflection is not a similarity: it must cost
    assert expression_error(mirrored, shape) > 0.01


def test_opening_errors_follow_mouth_and_eyes():
    from pipeline.evaluation.expression import opening_errors
    from stages.occluders import inter_ocular

    lm = np.zeros((68, 2))
    lm[36:42] = [[0, 0], [1, -1], [2, -1], [3, 0], [2, 1], [1, 1]]
    lm[42:48] = lm[36:42] + np.array([10.0, 0.0])
    lm[60:68] = [[3, 20], [4, 19], [5, 19], [6, 19], [7, 20], [6, 21], [5, 21], [4, 21]]
    assert opening_errors(lm, lm) == (0.0, 0.0)
    opened = lm.copy()
    opened[65:68, 1] += 2.0  # the lower inner lip 2 px lower
    mouth, eyes = opening_errors(opened, lm)
    assert mouth == pytest.approx(2.0 / inter_ocular(lm)) and eyes == 0.0
