"""Artifact measures (pipeline/evaluation/artifacts.py) on a real frame: a pasted fringe, a tone step at the
face's border, the output's own brows, an occluder painted over."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from pipeline.evaluation.faces import detect_faces


@pytest.fixture(scope="module")
def still(clip) -> tuple[np.ndarray, np.ndarray]:
    """The clip's first frame ``(H, W, 3) uint8`` RGB and its dlib 68 landmarks."""
    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    faces = detect_faces(frame)
    assert faces
    return frame, faces[0].landmarks


def _forehead_band(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """``(H, W) bool``: from the brows up by 0.4 inter-ocular distances, between the outer brow ends."""
    from stages.occluders import inter_ocular

    iod = inter_ocular(lm)
    band = np.zeros(frame.shape[:2], bool)
    top, bottom = int(lm[17:27, 1].min() - 0.4 * iod), int(lm[17:27, 1].min() - 0.02 * iod)
    band[top:bottom, int(lm[17, 0]) : int(lm[26, 0])] = True
    return band


def test_artifacts_see_a_pasted_fringe_and_not_a_soft_tone_change(still):
    from pipeline.evaluation.artifacts import artifact_measures
    from pipeline.evaluation.quality_report import ARTIFACT_LIMITS

    frame, lm = still
    band = _forehead_band(frame, lm)
    fringe = frame.copy()
    fringe[band] = (70, 52, 40)  # brown hair with a hard lower edge, as the classic swap pasted it
    bad = artifact_measures(frame, fringe, lm)
    assert bad["foreign_share"] > ARTIFACT_LIMITS["foreign_share"]
    # a soft change of skin tone over the whole face (a well-blended paste) is neither foreign nor a seam
    ys, xs = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    centre = lm[30]
    weight = np.exp(-(((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 40.0**2)))[..., None]
    toned = np.clip(frame * (1 - 0.12 * weight) + weight * np.array([6.0, 0, -6.0]), 0, 255).astype(np.uint8)
    good = artifact_measures(frame, toned, lm)
    assert good["foreign_share"] < ARTIFACT_LIMITS["foreign_share"]
    assert good["occluder_covered_share"] < ARTIFACT_LIMITS["occluder_covered_share"]
    assert good["seam"] < ARTIFACT_LIMITS["seam"]


def test_seam_is_a_colour_step_at_the_face_border(still):
    """A face pasted in another tone, hard-edged or feathered, that meets the frame's tone only past the jaw
    and forehead is a seam; the same tone change carried over the border (the face and the skin around it
    relit alike) is not, and neither are new features inside the face."""
    from pipeline.evaluation.artifacts import artifact_measures
    from pipeline.evaluation.quality_report import ARTIFACT_LIMITS
    from stages.occluders import inter_ocular

    frame, lm = still
    iod = inter_ocular(lm)
    up = (lm[27] - lm[8]) / np.linalg.norm(lm[27] - lm[8])
    outline = np.concatenate([lm[0:17], lm[26:16:-1] + 0.5 * iod * up])
    face = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(face, [np.round(outline).astype(np.int32)], 1)
    depth = cv2.distanceTransform(face, cv2.DIST_L2, 5) - cv2.distanceTransform(1 - face, cv2.DIST_L2, 5)
    depth /= iod  # IOD from the border, positive inside
    paler = np.clip(frame * 0.8 + np.array([40.0, 40.0, 45.0]), 0, 255)  # a paler, greyer face
    # the tone change fades in from where (IOD from the border) over how much: hard, feathered inside, relit
    for start, fade, is_seam in ((0.0, 0.0, True), (0.0, 0.1, True), (-0.4, 0.3, False)):
        weight = np.clip((depth - start) / fade, 0, 1) if fade else (depth > start).astype(np.float64)
        out = (frame * (1 - weight[..., None]) + paler * weight[..., None]).astype(np.uint8)
        seam = artifact_measures(frame, out, lm)["seam"]
        assert (seam > ARTIFACT_LIMITS["seam"]) == is_seam, (start, fade, seam)
    # features drawn inside the face (dark strokes: a source's brows, creases) are no seam
    lined = frame.copy()
    for k in range(4):
        y = int(lm[29, 1] + (k - 1.5) * 0.25 * iod)
        cv2.line(lined, (int(lm[2, 0] + 0.4 * iod), y), (int(lm[14, 0] - 0.4 * iod), y), (40, 30, 30), 2)
    assert artifact_measures(frame, lined, lm)["seam"] < ARTIFACT_LIMITS["seam"]


def test_artifacts_exempt_the_outputs_own_brows(still):
    """A source's brows set higher than the target's (the swap keeps the source's brow height) lie on the
    target's skin: they are the source's face, exempt by the output's landmarks; a fringe still counts."""
    from pipeline.evaluation.artifacts import artifact_measures
    from pipeline.evaluation.quality_report import ARTIFACT_LIMITS
    from stages.occluders import inter_ocular

    frame, lm = still
    iod = inter_ocular(lm)
    up = (lm[27] - lm[8]) / np.linalg.norm(lm[27] - lm[8])
    out_lm = lm.astype(np.float64).copy()
    out_lm[17:27] += 0.2 * iod * up  # the source's brows sit higher above its eyes
    browed = frame.copy()
    for brow in (out_lm[17:22], out_lm[22:27]):  # thick dark brows from dlib's points (their upper edge) down
        poly = np.concatenate([brow, (brow - 0.13 * iod * up)[::-1]])
        cv2.fillPoly(browed, [np.round(poly).astype(np.int32)], (45, 32, 28))
    blind = artifact_measures(frame, browed, lm)
    assert blind["foreign_share"] > ARTIFACT_LIMITS["foreign_share"]  # the case this exemption is for
    seen = artifact_measures(frame, browed, lm, out_lm)
    assert seen["foreign_share"] < ARTIFACT_LIMITS["foreign_share"]
    fringed = browed.copy()
    fringed[_forehead_band(frame, lm)] = (70, 52, 40)
    assert artifact_measures(frame, fringed, lm, out_lm)["foreign_share"] > ARTIFACT_LIMITS["foreign_share"]


def test_artifacts_see_an_occluder_painted_over(still):
    from pipeline.evaluation.artifacts import artifact_measures
    from pipeline.evaluation.quality_report import ARTIFACT_LIMITS

    frame, lm = still
    band = _forehead_band(frame, lm)
    original = frame.copy()
    original[band] = (30, 25, 22)  # the target's own dark fringe
    covered = artifact_measures(original, frame, lm)  # the output shows skin where the fringe was
    assert covered["occluder_covered_share"] > ARTIFACT_LIMITS["occluder_covered_share"]
    assert covered["foreign_share"] < ARTIFACT_LIMITS["foreign_share"]
