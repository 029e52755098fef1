"""The evaluator's faces (pipeline/evaluation/faces.py): head pose by PnP, the source photo's face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.evaluation.faces import (
    FACE_MODEL_3D,
    POSE_LANDMARKS,
    camera_matrix,
    head_pose,
    matrix_from_euler,
)
from tests.conftest import DATA
from tests.evaluation.conftest import SOURCE


@pytest.mark.parametrize("angles", [(20.0, -10.0, 5.0), (0.0, 0.0, 0.0), (-30.0, 15.0, -10.0)])
def test_pnp_recovers_known_pose(angles):
    width, height = 640, 480
    rvec = cv2.Rodrigues(matrix_from_euler(*angles))[0]
    tvec = np.array([[20.0], [-10.0], [2500.0]])
    projected = cv2.projectPoints(FACE_MODEL_3D, rvec, tvec, camera_matrix(width, height), None)[0]
    landmarks = np.zeros((68, 2))
    landmarks[list(POSE_LANDMARKS)] = projected.reshape(-1, 2)
    yaw, pitch, roll = head_pose(landmarks, width, height)
    assert np.allclose((yaw, pitch, roll), angles, atol=1.0)


def test_source_face_falls_back_to_mtcnn_and_says_so():
    """A sunglassed 3/4 photo that HOG misses (the swap found it with MTCNN) is still scored, and the result
    names the detector; a frontal photo keeps HOG's box."""
    from pipeline.evaluation.faces import source_face

    _, face, how = source_face(SOURCE, 1)
    assert how == "hog"
    image, face, how = source_face(DATA / "faces" / "prnet_man_sunglasses_a.jpg", 1)
    assert how == "mtcnn"
    x1, y1, x2, y2 = face.box
    m = 0.25 * (x2 - x1)  # the predictor places the jaw of a turned face a little past the box
    inside = (face.landmarks[:, 0] >= x1 - m) & (face.landmarks[:, 0] <= x2 + m)
    inside &= (face.landmarks[:, 1] >= y1 - m) & (face.landmarks[:, 1] <= y2 + m)
    assert inside.all() and image.shape[2] == 3
    eyes_y = face.landmarks[36:48, 1].mean()
    assert eyes_y < face.landmarks[48:68, 1].mean()  # eyes above the mouth: a face, not noise
