"""FaceForensics++ benchmark (pipeline/ffpp.py) and the many-video runner under it (pipeline/batch.py).

Without media: split parsing and pairing, frame picks, the source-identity rule, the records that let a run
resume. With media (slow): a miniature FF++ tree cut from ../shared/data clips, swapped end to end with the
in-process executor, resumed, and scored again as a --score-only folder of copies of the originals.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.errors import ConfigError, InputError
from models.files import sha256_of
from pipeline import ffpp
from pipeline.__main__ import main
from pipeline.batch import Job, RecordStore, config_hash, job_config, run_jobs
from pipeline.run import Summary
from tests.conftest import VIDEOS
from tests.media_making import cut_360p
from tests.model_fixtures import write_random_checkpoints

# ----------------------------------------------------------------------------------------- split and pairing


def write_split(folder: Path, pairs, name: str = "test") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(pairs))
    return path


def test_split_gives_both_directions_in_file_order(tmp_path):
    path = write_split(tmp_path, [["953", "974"], ["012", "026"]])
    pairs = ffpp.read_split(path)
    assert pairs == [("953", "974"), ("012", "026")]
    assert ffpp.video_pairs(pairs) == [("953", "974"), ("974", "953"), ("012", "026"), ("026", "012")]
    assert ffpp.split_ids(pairs) == ["953", "974", "012", "026"]
    assert ffpp.video_name("953", "974") == "953_974"
    assert ffpp.parse_video_name("953_974.mp4") == ("953", "974")
    assert ffpp.parse_video_name("953.mp4") is None


@pytest.mark.parametrize(
    "content,problem",
    [
        ("not json", "not a readable JSON"),
        ('{"a": 1}', "JSON list"),
        ('[["000", "001"], ["002"]]', "entry 1"),
        ('[["000", "000"]]', "entry 0"),
        ('[["000", "abc"]]', "entry 0"),
    ],
)
def test_bad_split_file_is_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "test.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        ffpp.read_split(path)
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_layout_errors_name_the_missing_part(tmp_path):
    with pytest.raises(InputError, match="root folder not found"):
        ffpp.find_layout(tmp_path / "nowhere", "c23", "test")
    (tmp_path / "original_sequences" / "youtube" / "c40" / "videos").mkdir(parents=True)
    with pytest.raises(InputError, match=r"c23/videos: folder of original videos not found.*present: c40"):
        ffpp.find_layout(tmp_path, "c23", "test")
    with pytest.raises(InputError, match=r"splits/test\.json: split file not found"):
        ffpp.find_layout(tmp_path, "c40", "test")
    write_split(tmp_path / "splits", [["000", "001"]])
    layout = ffpp.find_layout(tmp_path, "c40", "test")
    assert layout.original("000") == tmp_path / "original_sequences/youtube/c40/videos/000.mp4"
    (tmp_path / "original_sequences" / "youtube" / "raw" / "videos").mkdir(parents=True)
    assert ffpp.find_layout(tmp_path, "c0", "test").originals.parent.name == "raw"  # FF++'s name for c0


def test_score_only_folder_is_named_after_the_method(tmp_path):
    videos = tmp_path / "manipulated_sequences" / "FaceShifter" / "c23" / "videos"
    videos.mkdir(parents=True)
    (videos / "000_003.mp4").write_bytes(b"")
    (tmp_path / "original_sequences" / "youtube" / "c23" / "videos").mkdir(parents=True)
    write_split(tmp_path / "splits", [["000", "003"]])
    layout = ffpp.find_layout(tmp_path, "c23", "test")
    assert ffpp.score_only_folder("manipulated_sequences/FaceShifter", layout) == (videos, "FaceShifter")
    assert ffpp.score_only_folder(videos, layout) == (videos, "FaceShifter")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="TTT_SSS"):
        ffpp.score_only_folder(tmp_path / "empty", layout)


@pytest.mark.parametrize(
    "n,k,expected",
    [(25, 10, [0, 3, 5, 8, 11, 13, 16, 19, 21, 24]), (4, 10, [0, 1, 2, 3]), (9, 1, [4]), (0, 10, [])],
)
def test_frame_indices_are_evenly_spaced(n, k, expected):
    assert ffpp.frame_indices(n, k) == expected


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
    from pipeline import evaluate

    frames = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(len(faces))])

    def detect(image, upsample=0):
        face = faces[int(image[0, 0, 0])]
        return [] if face is None else [FakeFace(*face)]

    monkeypatch.setattr(evaluate, "detect_faces", detect)
    monkeypatch.setattr(evaluate, "head_pose", lambda lm, w, h: (float(lm[0, 0]), 0.0, 0.0))
    picked = ffpp.pick_identity_frame(frames, list(range(0, 5 * len(faces), 5)), 20.0, 0)
    assert (picked[0] if picked else None) == expected


# ----------------------------------------------------------------------------------------- records


@pytest.fixture
def fake_swap(monkeypatch):
    """Replace pipeline.run.swap_video: writes the input's bytes plus the source's into the output; records
    each call; raises InputError for inputs named bad*."""
    from pipeline import run

    calls: list[str] = []

    def swap(input_path, source_path, output, cfg, progress=True, digest=False, pool=None):
        calls.append(Path(input_path).name)
        if Path(input_path).name.startswith("bad"):
            raise InputError(f"{input_path}: not a readable video")
        Path(output).write_bytes(Path(input_path).read_bytes() + Path(source_path).read_bytes())
        return Summary(3, 3, 3, 0.5, Path(output))

    monkeypatch.setattr(run, "swap_video", swap)
    return calls


def make_jobs(tmp_path: Path, names=("a", "b", "bad")) -> list[Job]:
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    src = tmp_path / "in" / "face.png"
    src.write_bytes(b"face")
    jobs = []
    for n in names:
        (tmp_path / "in" / f"{n}.mp4").write_bytes(n.encode() * 10)
        jobs.append(Job(tmp_path / "in" / f"{n}.mp4", src, tmp_path / "out" / f"{n}.mp4"))
    return jobs


def test_finished_jobs_are_skipped_and_failures_isolated(tmp_path, base_cfg, fake_swap):
    jobs = make_jobs(tmp_path)
    records = tmp_path / "records.jsonl"
    first = run_jobs(jobs, base_cfg, records, progress=False)
    assert sorted(fake_swap) == ["a.mp4", "b.mp4", "bad.mp4"]  # executor=ray: jobs may run at once
    assert [o.ok for o in first] == [True, True, False] and not any(o.skipped for o in first)
    assert "bad.mp4: not a readable video" in first[2].record["error"]
    rec = first[0].record
    assert rec["job"] == "out/a.mp4" and rec["frames"] == 3 and rec["status"] == "ok"
    assert rec["output_sha256"] == sha256_of(jobs[0].output)
    assert rec["config_sha256"] == config_hash(base_cfg)

    fake_swap.clear()
    second = run_jobs(jobs, base_cfg, records, progress=False)
    assert fake_swap == ["bad.mp4"]  # the failed job is tried again, the finished ones are not
    assert [o.skipped for o in second] == [True, True, False]
    assert len(records.read_text().splitlines()) == 4

    fake_swap.clear()
    jobs[1].output.write_bytes(b"edited")  # an output changed since it was recorded
    jobs[0].output.unlink()  # an output removed
    run_jobs(jobs, base_cfg, records, progress=False)
    assert sorted(fake_swap) == ["a.mp4", "b.mp4", "bad.mp4"]


def test_config_input_and_source_changes_redo_jobs(tmp_path, base_cfg, fake_swap):
    jobs = make_jobs(tmp_path, ("a", "b"))
    records = tmp_path / "records.jsonl"
    run_jobs(jobs, base_cfg, records, progress=False)
    fake_swap.clear()
    other_executor = job_config(
        base_cfg, ["executor=local", "ray.max_in_flight=2", "ffpp.frames_per_video=3"]
    )
    run_jobs(jobs, other_executor, records, progress=False)
    assert fake_swap == []  # executor, Ray tuning and scoring settings do not change the frames written
    run_jobs(jobs, job_config(base_cfg, ["encode.crf=20"]), records, progress=False)
    assert sorted(fake_swap) == ["a.mp4", "b.mp4"]
    fake_swap.clear()
    jobs[1].input.write_bytes(b"new input")
    run_jobs(jobs, base_cfg, records, progress=False)
    assert sorted(fake_swap) == ["a.mp4", "b.mp4"]  # a: config back to the default; b: new input
    fake_swap.clear()
    run_jobs([Job(j.input, j.source, j.output, ("encode.crf=20",)) for j in jobs], base_cfg, records, False)
    assert sorted(fake_swap) == ["a.mp4", "b.mp4"]  # a job's own overrides are part of its config
    fake_swap.clear()
    jobs[0].source.write_bytes(b"another face")
    run_jobs(jobs, base_cfg, records, progress=False)
    assert sorted(fake_swap) == ["a.mp4", "b.mp4"]


def test_records_survive_a_cut_line_and_bad_jobs_are_recorded(tmp_path, base_cfg, fake_swap):
    jobs = make_jobs(tmp_path, ("a", "b"))
    records = tmp_path / "records.jsonl"
    run_jobs(jobs[:1], base_cfg, records, progress=False)
    with open(records, "a") as f:
        f.write('{"job": "out/b.mp4", "status": "o')  # a crash in the middle of a line
    missing = Job(tmp_path / "in" / "gone.mp4", jobs[0].source, tmp_path / "out" / "gone.mp4")
    bad_override = Job(jobs[1].input, jobs[1].source, tmp_path / "out" / "c.mp4", ("swap.nonsense=1",))
    fake_swap.clear()
    out = run_jobs([*jobs, missing, bad_override], base_cfg, records, progress=False)
    assert fake_swap == ["b.mp4"]
    assert [o.ok for o in out] == [True, True, False, False] and out[0].skipped
    assert "gone.mp4: no such file" in out[2].record["error"]
    assert "swap.nonsense" in out[3].record["error"]
    store = RecordStore(records)
    latest = store.load()
    assert store.skipped_lines == 1
    assert set(latest) == {"out/a.mp4", "out/b.mp4", "out/gone.mp4", "out/c.mp4"}
    with pytest.raises(InputError, match="two jobs write this output"):
        run_jobs([jobs[0], Job(jobs[1].input, jobs[1].source, jobs[0].output)], base_cfg, records, False)


def test_job_overrides_are_checked(base_cfg):
    assert job_config(base_cfg, ["encode.crf=20"])["encode"]["crf"] == 20
    assert base_cfg["encode"]["crf"] == 18  # the run's config is not modified
    for bad in ("encode.crf=fast", "swap.backend=magic", "nothing.here=1", "encode=1"):
        with pytest.raises(ConfigError):
            job_config(base_cfg, [bad])
    assert config_hash(base_cfg) != config_hash(job_config(base_cfg, ["encode.crf=20"]))
    assert config_hash(base_cfg) == config_hash(job_config(base_cfg, ["executor=local"]))


# ----------------------------------------------------------------------------------------- on media

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
    table = (swap_run / "results.md").read_text()
    assert f"| {SWAP_METHOD} | {totals['id_retrieval_pct']:.1f} |" in table and "005.mp4" in table
    with Image.open(swap_run / "contact_sheet.png") as sheet:
        assert sheet.size == (3 * ffpp.TILE, ffpp.CONTACT_LABEL_H + 4 * ffpp.TILE)


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
