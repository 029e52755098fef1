"""The quality evaluator (pipeline/evaluate.py) on constructed cases: a video against its own copy, a copy
whose face region jumps 3 px every other frame, synthetic head poses and synthetic landmark shapes."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.evaluate import (
    FACE_MODEL_3D,
    JITTER_REGIONS,
    POSE_LANDMARKS,
    _jitter_mean,
    camera_matrix,
    detect_faces,
    evaluate,
    expression_error,
    flow_jitter,
    head_pose,
    main,
    matrix_from_euler,
    procrustes_align,
    summary_line,
)
from tests.conftest import DATA
from tests.media_making import stream_copy

VIDEO = DATA / "videos" / "liveportrait_d20.mp4"
SOURCE = DATA / "faces" / "obama_a.jpg"
SHIFT_PX = 3
JITTER_THRESHOLD_IOD = 0.015  # a 3 px jump every frame is about 0.04 IOD on this clip's ~75 px eye distance


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """First 1.5 s of liveportrait_d20.mp4 (480², 25 fps, with audio), stream-copied."""
    return stream_copy(VIDEO, tmp_path_factory.mktemp("evaluate") / "clip.mp4", 1.5)


@pytest.fixture(scope="module")
def self_result(clip, base_cfg) -> dict:
    copy = clip.with_name("copy.mp4")
    shutil.copyfile(clip, copy)
    return evaluate(clip, copy, SOURCE, base_cfg)


def test_identity_against_a_reference_photo(clip, base_cfg):
    """A reference photo is scored like the source: given the source itself, the same distances and share,
    and the summary line names it; without one, nothing is reported for it."""
    output = clip.with_name("copy_reference.mp4")
    shutil.copyfile(clip, output)
    r = evaluate(clip, output, SOURCE, base_cfg, max_frames=4, reference=SOURCE)
    ident = r["identity"]
    assert ident["reference"] == str(SOURCE) and ident["faces"] == 4
    assert ident["distance_to_reference"] == ident["distance_to_source"]
    assert ident["distance_to_reference"]["mean"] > 0.1
    assert ident["nearer_reference_share"] == ident["nearer_source_share"]
    assert "nearer reference" in summary_line(r)
    plain = evaluate(clip, output, SOURCE, base_cfg, max_frames=4)["identity"]
    assert plain["reference"] is None and plain["nearer_reference_share"] is None
    assert plain["distance_to_source"] == ident["distance_to_source"]


@pytest.fixture(scope="module")
def shifted(clip) -> Path:
    """The clip with each frame's face region (dlib box grown 20 %) moved 3 px right on odd frames;
    libx264 crf 10 at the clip's frame rate, video only."""
    out = clip.with_name("shifted.mp4")
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        stream_in = src.streams.video[0]
        rate = stream_in.average_rate or Fraction(25)
        stream = dst.add_stream("libx264", rate=rate)
        stream.width, stream.height = stream_in.width, stream_in.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        stream.time_base = 1 / Fraction(rate)
        for i, frame in enumerate(src.decode(stream_in)):
            rgb = frame.to_ndarray(format="rgb24")
            if i % 2 == 1:
                faces = detect_faces(rgb)
                assert faces, f"no dlib face in frame {i} of the clip"
                x1, y1, x2, y2 = faces[0].box
                gw, gh = 0.2 * (x2 - x1), 0.2 * (y2 - y1)
                h, w = rgb.shape[:2]
                x1, y1 = max(0, int(x1 - gw)), max(0, int(y1 - gh))
                x2, y2 = min(w, int(x2 + gw)), min(h, int(y2 + gh))
                rgb = rgb.copy()
                rgb[y1:y2, x1 + SHIFT_PX : x2] = frame.to_ndarray(format="rgb24")[y1:y2, x1 : x2 - SHIFT_PX]
            new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            new.pts = i
            new.time_base = stream.time_base
            dst.mux(stream.encode(new))
        dst.mux(stream.encode())
    return out


def test_self_copy_scores_perfectly(self_result):
    r = self_result
    assert r["frames"]["scored"] >= 30 and r["frames"]["original"] == r["frames"]["output"]
    assert r["identity"]["nearer_source_share"] == 0.0
    assert r["identity"]["distance_to_original"]["mean"] < 1e-6
    assert r["identity"]["distance_to_source"]["mean"] > 0.6  # obama_a is another person
    assert r["flicker"] == pytest.approx(1.0, abs=0.01)
    assert r["pose_error_deg"]["mean"] < 1e-6
    assert r["expression_error_iod"]["mean"] < 1e-6
    assert r["mouth_open_error_iod"]["mean"] < 1e-6 and r["eyes_open_error_iod"]["mean"] < 1e-6
    art = r["artifacts"]
    assert art["frames"] >= 30
    assert art["foreign_share"] == 0.0 and art["occluder_covered_share"] == 0.0 and art["seam"] == 0.0
    assert r["jitter_iod"] < 1e-6 and r["jitter_pairs"] >= 29
    assert set(r["jitter_by_region_iod"]) == {"brows", "nose", "eyes", "lips", "inner_mouth"}
    assert all(v < 1e-6 for v in r["jitter_by_region_iod"].values())
    assert r["jitter_landmarks_iod"] < 1e-6 and r["jitter_landmarks_pairs"] >= 29
    integrity = r["integrity"]
    assert integrity["frame_count_equal"] and integrity["timestamps_equal"]
    assert integrity["audio_identical"] and integrity["audio_packets"]["original"] > 0
    assert integrity["background_ok"] and integrity["all_ok"]
    json.dumps(r, allow_nan=False)  # JSON-able
    line = summary_line(r)
    assert "\n" not in line and "integrity ok" in line


def test_shifted_face_raises_jitter_and_flicker(shifted, clip, self_result, base_cfg):
    r = evaluate(clip, shifted, SOURCE, base_cfg, max_frames=24)
    assert r["jitter_pairs"] >= 20
    assert r["jitter_iod"] > JITTER_THRESHOLD_IOD
    assert r["jitter_iod"] > 3 * self_result["jitter_iod"]
    regions = r["jitter_by_region_iod"]
    assert all(v > JITTER_THRESHOLD_IOD for v in regions.values())  # a rigid shift moves every part
    # every landmark 17-67 is in exactly one part: the parts' point-weighted mean is the overall jitter
    sizes = {k: len(v) for k, v in JITTER_REGIONS.items()}
    assert sum(sizes.values()) == 51
    pooled = sum(regions[k] * n for k, n in sizes.items()) / 51
    assert pooled == pytest.approx(r["jitter_iod"], rel=1e-9)
    assert r["jitter_landmarks_iod"] > JITTER_THRESHOLD_IOD  # the landmark form sees it too
    assert r["flicker"] > 1.2
    assert r["frames"]["truncated"]
    assert not r["integrity"]["audio_identical"]  # nothing but the video was written
    assert "FAILED" in summary_line(r)


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


def test_cli_writes_json_and_rejects_bad_inputs(clip, tmp_path, capsys):
    out_json = tmp_path / "sub" / "result.json"
    assert main(["--original", str(clip), "--output", str(clip), "--source", str(SOURCE),
                 "--json", str(out_json), "--max-frames", "3"]) == 0  # fmt: skip
    result = json.loads(out_json.read_text())
    assert result["frames"]["scored"] == 3
    assert "frames scored" in capsys.readouterr().out
    assert not list(out_json.parent.glob("*.tmp"))

    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"nope")
    assert main(["--original", str(bad), "--output", str(clip), "--source", str(SOURCE)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swapstream: error:") and "\n" not in err
    assert main(["--original", str(clip), "--output", str(clip), "--source", str(bad)]) == 2


def test_configured_networks_replace_the_defaults(clip, base_cfg, tmp_path):
    """evaluate.identity/pose/expression load user checkpoints (random ones here) through the registry;
    a copy of the clip then scores zero distance to its original, zero pose and expression error."""
    import copy as copy_module

    from models.errors import ModelFileError
    from models.weights import REGISTRY
    from tests.model_fixtures import write_random_checkpoints

    cfg = copy_module.deepcopy(base_cfg)
    cfg["evaluate"] = {"identity": "arcface_iresnet50", "pose": "hopenet", "expression": "face_recon"}
    cfg["weights"]["dir"] = str(tmp_path)
    output = clip.with_name("copy_nets.mp4")
    shutil.copyfile(clip, output)
    with pytest.raises(ModelFileError, match=REGISTRY["arcface_iresnet50"].filename):
        evaluate(clip, output, SOURCE, cfg, max_frames=3)
    write_random_checkpoints(tmp_path, ("arcface_iresnet50", "hopenet", "face_recon"))
    r = evaluate(clip, output, SOURCE, cfg, max_frames=3)
    assert "arcface_iresnet50" in r["evaluator"]["identity"] and "hopenet" in r["evaluator"]["pose"]
    assert "face_recon" in r["evaluator"]["expression"]
    assert r["identity"]["faces"] == 3 and r["identity"]["distance_to_original"]["mean"] < 1e-5
    assert r["pose_error_deg"]["mean"] < 1e-6
    assert r["expression_error_coeff"]["mean"] < 1e-6 and "expression_error_iod" not in r
    assert "3DMM" in summary_line(r)


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
    from pipeline.evaluate import inter_ocular

    iod = inter_ocular(lm)
    band = np.zeros(frame.shape[:2], bool)
    top, bottom = int(lm[17:27, 1].min() - 0.4 * iod), int(lm[17:27, 1].min() - 0.02 * iod)
    band[top:bottom, int(lm[17, 0]) : int(lm[26, 0])] = True
    return band


def test_artifacts_see_a_pasted_fringe_and_not_a_soft_tone_change(still):
    from pipeline.evaluate import artifact_measures
    from pipeline.quality import ARTIFACT_LIMITS

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
    from pipeline.evaluate import artifact_measures, inter_ocular
    from pipeline.quality import ARTIFACT_LIMITS

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
    from pipeline.evaluate import artifact_measures, inter_ocular
    from pipeline.quality import ARTIFACT_LIMITS

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
    from pipeline.evaluate import artifact_measures
    from pipeline.quality import ARTIFACT_LIMITS

    frame, lm = still
    band = _forehead_band(frame, lm)
    original = frame.copy()
    original[band] = (30, 25, 22)  # the target's own dark fringe
    covered = artifact_measures(original, frame, lm)  # the output shows skin where the fringe was
    assert covered["occluder_covered_share"] > ARTIFACT_LIMITS["occluder_covered_share"]
    assert covered["foreign_share"] < ARTIFACT_LIMITS["foreign_share"]


def test_opening_errors_follow_mouth_and_eyes():
    from pipeline.evaluate import inter_ocular, opening_errors

    lm = np.zeros((68, 2))
    lm[36:42] = [[0, 0], [1, -1], [2, -1], [3, 0], [2, 1], [1, 1]]
    lm[42:48] = lm[36:42] + np.array([10.0, 0.0])
    lm[60:68] = [[3, 20], [4, 19], [5, 19], [6, 19], [7, 20], [6, 21], [5, 21], [4, 21]]
    assert opening_errors(lm, lm) == (0.0, 0.0)
    opened = lm.copy()
    opened[65:68, 1] += 2.0  # the lower inner lip 2 px lower
    mouth, eyes = opening_errors(opened, lm)
    assert mouth == pytest.approx(2.0 / inter_ocular(lm)) and eyes == 0.0


def test_source_face_falls_back_to_mtcnn_and_says_so():
    """A sunglassed 3/4 photo that HOG misses (the swap found it with MTCNN) is still scored, and the result
    names the detector; a frontal photo keeps HOG's box."""
    from pipeline.evaluate import _source_face

    _, face, how = _source_face(SOURCE, 1)
    assert how == "hog"
    image, face, how = _source_face(DATA / "faces" / "prnet_man_sunglasses_a.jpg", 1)
    assert how == "mtcnn"
    x1, y1, x2, y2 = face.box
    m = 0.25 * (x2 - x1)  # the predictor places the jaw of a turned face a little past the box
    inside = (face.landmarks[:, 0] >= x1 - m) & (face.landmarks[:, 0] <= x2 + m)
    inside &= (face.landmarks[:, 1] >= y1 - m) & (face.landmarks[:, 1] <= y2 + m)
    assert inside.all() and image.shape[2] == 3
    eyes_y = face.landmarks[36:48, 1].mean()
    assert eyes_y < face.landmarks[48:68, 1].mean()  # eyes above the mouth: a face, not noise


def _moving_texture(offset: tuple[float, float], size: int = 320) -> np.ndarray:
    """``(size, size) float32`` window of a fixed smooth random texture, moved by ``offset`` px (x, y)."""
    rng = np.random.default_rng(7)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (2 * size, 2 * size)).astype(np.float32), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    x, y = int(size / 2 + offset[0]), int(size / 2 + offset[1])
    return texture[y : y + size, x : x + size]


def test_flow_jitter_leaves_out_flow_that_fails_forward_backward(monkeypatch):
    """Flow that does not return to its start (forward then backward) is a flow failure, not motion: on
    liveportrait_d12's blurred frames DIS once read 0.85 IOD at an output's brows that differed from
    another run's by one grey level. With the flow prescribed (both videos move 4 px; inside a square the
    output's flow says 34 px forwards and 4 back), those landmarks are NaN and the rest read 0 jitter;
    34 px there both ways is scored as the 0.5 IOD extra motion it is; the aggregates skip NaNs."""
    rng = np.random.default_rng(3)
    landmarks = np.column_stack([rng.uniform(80, 240, 68), rng.uniform(80, 240, 68)])
    landmarks[36:42], landmarks[42:48] = (130, 150), (190, 150)  # eye distance 60 px
    box = np.array([100, 100, 220, 220], float)  # grown by FLOW_MARGIN: the crop starts at (70, 70)
    x, y = np.rint(landmarks[17:, 0]) - 70, np.rint(landmarks[17:, 1]) - 70  # crop pixels
    in_square = (x >= 40) & (x < 80) & (y >= 40) & (y < 80)
    clear = ((x < 30) | (x >= 80)) | ((y < 40) | (y >= 80))  # neither in the square nor landing in it
    clear &= ~(((x + 4) >= 70) & ((x + 4) < 110) & (y >= 40) & (y < 80))  # nor in its shifted copy
    assert in_square.sum() >= 2 and clear.sum() >= 20

    def fake(output_back: float):
        def field(shape, uniform, region, value):
            flow = np.zeros((*shape, 2), np.float32)
            flow[..., 0] = uniform
            if region is not None:
                flow[40:80, region, 0] = value
            return flow

        fields = iter(
            [
                (4.0, None, 0.0),  # original t -> t-1
                (-4.0, None, 0.0),  # original t-1 -> t
                (4.0, slice(40, 80), 34.0),  # output t -> t-1: 30 px more inside the square
                (-4.0, slice(70, 110), output_back),  # output t-1 -> t, where that flow lands
            ]
        )

        class Flow:
            def calc(self, a, b, _):
                uniform, region, value = next(fields)
                return field(a.shape, uniform, region, value)

        return lambda: Flow()

    frame = np.zeros((320, 320, 3), np.uint8)
    for output_back, consistent in ((-4.0, False), (-34.0, True)):
        monkeypatch.setattr("pipeline.evaluate._dense_flow", fake(output_back))
        jitter = flow_jitter((frame, frame), (frame, frame), box, landmarks)
        assert np.allclose(jitter[clear], 0.0)
        if consistent:
            assert np.allclose(jitter[in_square], 30.0 / 60.0)
        else:
            assert np.isnan(jitter[in_square]).all()
            assert _jitter_mean([jitter]) == pytest.approx(np.nanmean(jitter))
    assert _jitter_mean([np.full(51, np.nan)]) is None


@pytest.mark.parametrize("extra_px", [0.0, 3.0])
def test_flow_jitter_under_fast_motion(extra_px):
    """A scene moving 10 px a frame (0.17 IOD, liveportrait_d12's speed); the output's face square has
    another texture (contrast, sharpening, offset) that moves with the scene, and on the second frame
    moves ``extra_px`` further. Jitter reads the extra motion (0 or 3 px = 0.05 IOD), not the texture.
    (With the 3 px, DIS's backward flow fails on most of the sharpened square, so the forward-backward
    check leaves those landmarks out; on the grid's outputs it leaves out 0.1-0.5 % of them.)
    Farneback, used before, read the 3 px as 0.104 IOD here."""
    motion = (10, -6)
    rng = np.random.default_rng(1)
    landmarks = np.column_stack([rng.uniform(120, 200, 68), rng.uniform(120, 200, 68)])
    landmarks[36:42], landmarks[42:48] = (130, 150), (190, 150)  # eye distance 60 px
    weight = np.zeros((320, 320), np.float32)
    weight[90:230, 90:230] = 1
    weight = cv2.GaussianBlur(weight, (0, 0), 4)

    def retextured(g: np.ndarray) -> np.ndarray:
        return 0.8 * (2 * g - cv2.GaussianBlur(g, (0, 0), 2)) + 25

    def rgb(g: np.ndarray) -> np.ndarray:
        return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)

    prev, cur = _moving_texture((0, 0)), _moving_texture(motion)
    moved = _moving_texture((motion[0] + extra_px, motion[1]))
    prev_out = weight * retextured(prev) + (1 - weight) * prev
    cur_out = weight * retextured(moved) + (1 - weight) * cur
    box = np.array([100, 100, 220, 220], float)
    values = flow_jitter((rgb(prev), rgb(prev_out)), (rgb(cur), rgb(cur_out)), box, landmarks)
    assert np.isfinite(values).sum() >= 5  # where DIS's backward flow fails on the square, not scored
    jitter = np.nanmean(values)
    assert jitter == pytest.approx(extra_px / 60, abs=0.006)
