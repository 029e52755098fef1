"""FaceForensics++ source identities (pipeline/evaluation/ffpp_identity.py): the rule that picks the frame."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import ffpp_identity


class FakeFace:
    def __init__(self, side: float, yaw: float) -> None:
        self.box = np.array([0.0, 0.0, side, side])
        self.landmarks = np.full((68, 2), yaw)


@pytest.mark.parametrize(
    "faces,expected",
    [
        # (side, yaw) of the largest face per frame, None = no face
        ([(100, 5), (140, 35), (120, -10), None], 2),  # largest frontal beats a larger profile
        ([(120, 5), (120, 2), None], 0),  # tie: the earliest
        ([(100, 40), (130, -45)], 1),  # no frontal face: the largest
        ([None, None], None),
    ],
)
def test_source_identity_rule(monkeypatch, faces, expected):
    from pipeline.evaluation import faces as evaluator_faces

    frames = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(len(faces))])

    def detect(image, upsample=0):
        face = faces[int(image[0, 0, 0])]
        return [] if face is None else [FakeFace(*face)]

    monkeypatch.setattr(evaluator_faces, "detect_faces", detect)
    monkeypatch.setattr(evaluator_faces, "head_pose", lambda lm, w, h: (float(lm[0, 0]), 0.0, 0.0))
    picked = ffpp_identity.pick_identity_frame(frames, list(range(0, 5 * len(faces), 5)), 20.0, 0)
    assert (picked[0] if picked else None) == expected
