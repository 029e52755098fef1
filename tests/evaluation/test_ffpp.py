"""FaceForensics++ benchmark (pipeline/evaluation/ffpp.py) on media (slow): a miniature FF++ tree cut from
../shared/data clips, swapped end to end with the in-process executor, resumed, and scored again as a
--score-only folder of copies of the originals; earlier results and a missing split file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.errors import InputError
from pipeline.__main__ import main
from pipeline.evaluation import ffpp, ffpp_report
from tests.conftest import VIDEOS
from tests.evaluation.test_ffpp_layout import write_split
from tests.media_making import cut_360p
from tests.model_fixtures import write_random_checkpoints

CLIPS = [  # id in the mini tree -> clip of ../shared/data/videos (four different people)
    "liveportrait_d20.mp4",
    "retalking_face_5.mp4",
    "retalking_face_2.mp4",
    "sadtalker_WDA_KatieHill_000.mp4",
]
SPLIT = [  # both directions of each pair are swapped
    ["000", "001"],
    ["002", "003"],
    ["001", "004"],
    ["005", "002"],
]  # 004 missing, 005 corrupt
GOOD = ["000_001", "001_000", "002_003", "003_002"]
BAD = {"001_004": "004.mp4: no such file", "004_001": "004.mp4: no such file"}
CORRUPT = ["005_002", "002_005"]
SWAP_METHOD = "swapstream-classic"


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory, data_dir) -> Path:
    """A miniature FF++ tree: the first second of four clips at 360 px (libx264, AAC) as originals
    000-003 (c23), a corrupt 005.mp4, no 004.mp4, and splits/test.json pairing them."""
    root = tmp_path_factory.mktemp("ffpp") / "FaceForensics++"
    videos = root / "original_sequences" / "youtube" / "c23" / "videos"
    videos.mkdir(parents=True)
    for i, clip in enumerate(CLIPS):
        cut_360p(VIDEOS / clip, videos / f"{i:03d}.mp4", 1, crf=20)
    (videos / "005.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 5000)
    write_split(root / "splits", SPLIT)
    return root


def ffpp_cli(capsys, root: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["ffpp", "--root", str(root), "--out", str(out), "--quiet", "executor=local", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def swap_run(mini_root, tmp_path_factory) -> Path:
    """The benchmark run once on the mini tree: its run folder."""
    out = tmp_path_factory.mktemp("ffpp-run") / "run"
    code = main(["ffpp", "--root", str(mini_root), "--out", str(out), "--quiet", "executor=local"])
    assert code == 0
    return out


def load_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_benchmark_writes_results(swap_run, mini_root):
    from PIL import Image

    results = load_results(swap_run)
    assert results["split"] == "test" and results["compression"] == "c23"
    assert results["gallery"] == ["000", "001", "002", "003"]
    method = results["methods"][SWAP_METHOD]
    assert {"torch", "dlib", "decord", "av", "swapstream"} <= set(method["versions"])
    assert method["config"]["executor"] == "local" and method["kind"] == "swap"
    videos = method["videos"]
    assert list(videos) == [*GOOD, *BAD, *CORRUPT]
    for name in GOOD:
        v = videos[name]
        assert v["status"] == "ok", v.get("error")
        assert v["frame_indices"] == [0, 3, 5, 8, 11, 13, 16, 19, 21, 24]
        assert v["frames"]["scored"] >= 8
        assert v["integrity"]["frame_count_equal"] and v["integrity"]["audio_identical"]
        assert v["seconds"]["swap"] > 0 and v["seconds"]["score"] > 0
        assert v["swap"]["status"] == "ok" and (swap_run / SWAP_METHOD / f"{name}.mp4").is_file()
    for name, problem in BAD.items():
        assert videos[name]["status"] == "error" and problem in videos[name]["error"]
    for name in CORRUPT:
        assert videos[name]["status"] == "error" and "005.mp4: not a readable video" in videos[name]["error"]
    ident = results["identities"]["000"]
    assert ident["frames_looked_at"] == [0, 5, 10, 15, 20] and ident["frame"] in ident["frames_looked_at"]
    assert (swap_run / ident["photo"]).is_file()

    totals = method["totals"]
    assert totals["videos"] == 4 and totals["errors"] == 4 and totals["frames"] >= 32
    assert totals["id_retrieval_pct"] >= 50  # the swapped face is nearest its source among 4 identities
    assert totals["pose_error_deg"] < 10 and totals["expression_error_iod"] < 0.1
    assert totals["source_shift"] > 0  # the swapped identity moved towards its source
    assert totals["cross_target_sources"] == 0  # each source of the mini split has one scored target
    table = (swap_run / "results.md").read_text()
    assert f"| {SWAP_METHOD} | {totals['id_retrieval_pct']:.1f} |" in table and "005.mp4" in table
    with Image.open(swap_run / "contact_sheet.png") as sheet:
        assert sheet.size == (3 * ffpp_report.TILE, ffpp_report.CONTACT_LABEL_H + 4 * ffpp_report.TILE)


@pytest.mark.slow
def test_second_run_skips_finished_videos(swap_run, mini_root, monkeypatch, capsys):
    from pipeline import run

    def must_not_run(*args, **kwargs):
        raise AssertionError("swap_video called for a finished video")

    before = load_results(swap_run)["methods"][SWAP_METHOD]
    records = (swap_run / "records.jsonl").read_text()
    monkeypatch.setattr(run, "swap_video", must_not_run)
    code, _, err = ffpp_cli(capsys, mini_root, swap_run)
    assert code == 0, err
    assert (swap_run / "records.jsonl").read_text() == records
    after = load_results(swap_run)["methods"][SWAP_METHOD]
    assert after["totals"] == before["totals"]
    assert all(after["videos"][n]["resumed"] for n in GOOD)
    code, _, err = ffpp_cli(capsys, mini_root, swap_run, "--limit", "3")
    assert code == 0, err
    assert list(load_results(swap_run)["methods"][SWAP_METHOD]["videos"]) == GOOD[:3]


@pytest.mark.slow
def test_score_only_copies_of_the_originals_are_not_swaps(swap_run, mini_root, capsys):
    copies = mini_root / "manipulated_sequences" / "Copies" / "c23" / "videos"
    copies.mkdir(parents=True)
    originals = mini_root / "original_sequences" / "youtube" / "c23" / "videos"
    for name in GOOD[:3]:  # 003_002 left out: reported as missing
        shutil.copyfile(originals / f"{name[:3]}.mp4", copies / f"{name}.mp4")
    code, out, err = ffpp_cli(capsys, mini_root, swap_run, "--score-only", "manipulated_sequences/Copies")
    assert code == 0, err
    assert "ffpp Copies: 3 videos" in out
    results = load_results(swap_run)
    method = results["methods"]["Copies"]
    assert method["kind"] == "score-only" and method["folder"] == str(copies)
    for name in GOOD[:3]:
        v = method["videos"][name]
        scored = [f for f in v["per_frame"] if "retrieved" in f]
        assert scored and all(f["retrieved"] == name[:3] for f in scored)  # nearest its own original
        assert v["seconds"]["swap"] is None
        # a copy of the target: as steady as the target, not moved towards the source, the same identity
        cons = v["consistency"]
        assert cons["steadiness"] == cons["steadiness_original"] and cons["source_shift"] == 0.0
        assert v["identity_direction"]["output"] == v["identity_direction"]["original"]
    assert "003_002.mp4: no such file" in method["videos"]["003_002"]["error"]
    totals = method["totals"]
    assert totals["id_retrieval_pct"] == 0.0 and totals["pose_error_deg"] < 0.5
    assert totals["expression_error_iod"] < 0.01 and totals["flicker"] == pytest.approx(1.0, abs=0.01)
    swapped = results["methods"][SWAP_METHOD]["totals"]
    assert swapped["id_retrieval_pct"] > totals["id_retrieval_pct"]
    table = (swap_run / "results.md").read_text()
    assert "| Copies | 0.0 |" in table and f"| {SWAP_METHOD} |" in table


@pytest.mark.slow
def test_score_only_uses_the_configured_evaluator_networks(swap_run, mini_root, tmp_path, capsys):
    """evaluate.identity/pose/expression reach the FF++ scores too: gallery and retrieval by ArcFace
    cosine distance, Hopenet pose, 3DMM expression coefficients; a run folder scored with other networks
    is refused, not mixed."""
    copies = mini_root / "manipulated_sequences" / "CopiesNets" / "c23" / "videos"
    copies.mkdir(parents=True)
    originals = mini_root / "original_sequences" / "youtube" / "c23" / "videos"
    shutil.copyfile(originals / "000.mp4", copies / "000_001.mp4")
    weights = tmp_path / "weights"
    write_random_checkpoints(weights, ("arcface_iresnet50", "hopenet", "face_recon"))
    nets = [
        "evaluate.identity=arcface_iresnet50",
        "evaluate.pose=hopenet",
        "evaluate.expression=face_recon",
        f"weights.dir={weights}",
        "--limit",
        "1",
        "--score-only",
        "manipulated_sequences/CopiesNets",
    ]
    out = tmp_path / "run"
    code, _, err = ffpp_cli(capsys, mini_root, out, *nets)
    assert code == 0, err
    results = load_results(out)
    assert results["evaluate"] == {
        "identity": "arcface_iresnet50",
        "pose": "hopenet",
        "expression": "face_recon",
    }
    assert (
        "arcface_iresnet50" in results["evaluator"]["identity"] and "hopenet" in results["evaluator"]["pose"]
    )
    video = results["methods"]["CopiesNets"]["videos"]["000_001"]
    assert video["status"] == "ok", video.get("error")
    scored = [f for f in video["per_frame"] if "retrieved" in f]
    assert scored and all(0.0 <= f["distance_to_source"] <= 2.0 for f in scored)  # cosine, not Euclidean
    # a copy: the same networks on the same pixels give no pose or expression difference
    assert all(f["pose_error_deg"] < 1e-6 and f["expression_error_coeff"] < 1e-6 for f in scored)
    assert "expression_error_iod" not in scored[0]
    totals = results["methods"]["CopiesNets"]["totals"]
    assert totals["expression_error_coeff"] == pytest.approx(0.0, abs=1e-6)
    assert "expression (3DMM coeff)" in (out / "results.md").read_text()

    # the dlib-scored run folder is not mixed with these scores
    code, _, err = ffpp_cli(capsys, mini_root, swap_run, *nets)
    assert code == 2 and "evaluate.identity='dlib' (now 'arcface_iresnet50')" in err
    assert len(err.strip().splitlines()) == 1


def test_results_from_before_the_evaluator_setting_count_as_its_defaults(tmp_path):
    """A results.json written before ``evaluate`` was a setting was scored with the shipped networks: a run
    with those defaults adds to it, a run with learned networks is refused."""
    settings = {"compression": "c23", "split": "test", "ffpp": {"frames_per_video": 10}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**settings, "methods": {"old": {}}}))
    defaults = {"identity": "dlib", "pose": "pnp", "expression": "landmarks"}
    assert ffpp._previous_results(path, {**settings, "evaluate": defaults})["methods"] == {"old": {}}
    with pytest.raises(InputError, match="evaluate.pose='pnp' \\(now 'hopenet'\\)"):
        ffpp._previous_results(path, {**settings, "evaluate": {**defaults, "pose": "hopenet"}})


def test_missing_split_file_stops_with_one_line(tmp_path, capsys):
    root = tmp_path / "FaceForensics++"
    (root / "original_sequences" / "youtube" / "c23" / "videos").mkdir(parents=True)
    write_split(root / "splits", [["000", "001"]])
    out = tmp_path / "run"
    code, _, err = ffpp_cli(capsys, root, out, "--split", "val")
    assert code == 2
    assert "val.json: split file not found" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
