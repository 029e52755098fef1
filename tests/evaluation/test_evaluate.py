"""The quality evaluator (pipeline/evaluation/evaluate.py) on constructed cases: a video against its own copy,
a copy whose face region jumps 3 px every other frame, the command line, configured networks."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import pytest

from pipeline.evaluation.evaluate import evaluate, main, summary_line
from pipeline.evaluation.faces import detect_faces
from pipeline.evaluation.jitter import JITTER_REGIONS
from tests.evaluation.conftest import SOURCE

SHIFT_PX = 3
JITTER_THRESHOLD_IOD = 0.015  # a 3 px jump every frame is about 0.04 IOD on this clip's ~75 px eye distance


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
