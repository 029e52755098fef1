"""Manifests of many videos (pipeline/manifest.py) and ``python -m pipeline batch``.

Without media: CSV and JSON-lines parsing, relative paths, overrides, the one-line errors naming the
manifest's file and line, exit codes with a stand-in swap. With media (slow): three short clips cut from
../shared/data and one row whose source photo has no face, swapped in-process, then run again.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from models.errors import InputError
from pipeline import manifest
from pipeline.__main__ import main
from pipeline.manifest import read_manifest
from pipeline.run import Summary
from tests.conftest import FACES, VIDEOS


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def batch_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["batch", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------------------- parsing


def test_csv_rows_paths_and_overrides(tmp_path):
    path = write(
        tmp_path / "runs" / "jobs.csv",
        "input, source, output, overrides\n"
        "\n"
        "# a comment row\n"
        "clips/a.mp4,faces/a.jpg,out/a.mp4,\n"
        f"{tmp_path}/b.mp4,faces/b.jpg,out/b.mp4,swap.target=largest encode.crf=20\n"
        '"clips/c d.mp4",faces/c.jpg,,"mask.types=\'[box, landmarks]\' encode.crf=20"\n',
    )
    rows = read_manifest(path)
    base = tmp_path / "runs"
    assert [r.line for r in rows] == [4, 5, 6]
    a, b, c = (r.job for r in rows)
    assert (a.input, a.source, a.output, a.overrides) == (
        base / "clips/a.mp4",
        base / "faces/a.jpg",
        base / "out/a.mp4",
        (),
    )
    assert b.input == tmp_path / "b.mp4"  # absolute paths are kept
    assert b.overrides == ("swap.target=largest", "encode.crf=20")
    assert c.input == base / "clips" / "c d.mp4"
    assert c.output == base / "clips" / "c d.swapped.mp4"  # empty output: beside the input, like swap
    assert c.overrides == ("mask.types=[box, landmarks]", "encode.crf=20")  # shell-style quoting


def test_csv_without_overrides_column(tmp_path):
    rows = read_manifest(write(tmp_path / "j.CSV", "output,input,source\no.mp4,i.mp4,f.png\n"))
    assert rows[0].job.input == tmp_path / "i.mp4" and rows[0].job.output == tmp_path / "o.mp4"


def test_jsonl_rows(tmp_path):
    lines = [
        {"input": "a.mp4", "source": "a.jpg", "output": "out/a.mp4"},
        {"input": "b.mp4", "source": "b.jpg", "output": "out/b.mp4", "overrides": ["encode.crf=20"]},
        {"input": "c.mp4", "source": "c.jpg", "output": "out/c.mp4", "overrides": "swap.target=largest"},
    ]
    text = "\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n"
    for name in ("jobs.jsonl", "jobs.json"):
        rows = read_manifest(write(tmp_path / name, text))
        assert [r.line for r in rows] == [1, 2, 4]
        assert [r.job.overrides for r in rows] == [(), ("encode.crf=20",), ("swap.target=largest",)]
        assert rows[1].job.output == tmp_path / "out" / "b.mp4"


HEADER = "input,source,output,overrides\n"


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        ("jobs.txt", HEADER + "a.mp4,a.jpg,o.mp4\n", None, "unknown manifest format '.txt'"),
        ("jobs.csv", "input,output\na.mp4,o.mp4\n", 1, "missing column source"),
        ("jobs.csv", "input,sorce,output\na.mp4,a.jpg,o.mp4\n", 1, "unknown column 'sorce'"),
        ("jobs.csv", HEADER + "a.mp4,a.jpg,a.out.mp4\n,b.jpg,b.out.mp4\n", 3, "empty input"),
        ("jobs.csv", HEADER + "a.mp4, ,a.out.mp4\n", 2, "empty source"),
        ("jobs.csv", HEADER + "a.mp4,f.jpg,o.mp4\nb.mp4,f.jpg,./o.mp4\n", 3, "also the output of line 2"),
        ("jobs.csv", HEADER + "a.mp4,f.jpg,b.mp4\nb.mp4,f.jpg,c.mp4\n", 2, "is the input video of line 3"),
        ("jobs.csv", HEADER + "a.mp4,f.jpg,o.mp4,encode.crf\n", 2, "not of the form key.path=value"),
        ("jobs.csv", HEADER + "a.mp4,f.jpg,o.mp4,'a=1\n", 2, "No closing quotation"),
        ("jobs.csv", HEADER + "a.mp4,f.jpg,o.mp4,,extra\n", 2, "5 fields but the header has 4"),
        ("jobs.csv", HEADER + "\n", None, "no jobs listed"),
        ("jobs.csv", "", None, "empty manifest"),
        ("jobs.jsonl", '{"input": "a.mp4", "source": "f.jpg", "output": "o.mp4"}\n{"input": \n', 2, "JSON"),
        ("jobs.jsonl", '["a.mp4", "f.jpg", "o.mp4"]\n', 1, "expected a JSON object"),
        ("jobs.jsonl", '{"input": "a.mp4", "output": "o.mp4"}\n', 1, "missing key source"),
        ("jobs.jsonl", '{"input": "a.mp4", "source": "", "output": "o.mp4"}\n', 1, "empty source"),
        ("jobs.jsonl", '{"input": "a.mp4", "source": "f", "output": "o.mp4", "crf": 1}\n', 1, "unknown key"),
        ("jobs.jsonl", '{"input": "a.mp4", "source": "f", "output": "o.mp4", "overrides": 3}\n', 1, "list"),
        ("jobs.jsonl", '{"input": 3, "source": "f", "output": "o.mp4"}\n', 1, "input should be a path"),
    ],
)
def test_bad_manifest_names_file_and_line(tmp_path, name, text, line, problem):
    path = write(tmp_path / name, text)
    with pytest.raises(InputError) as info:
        read_manifest(path)
    message = str(info.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message
    if line is not None:
        assert f"{path} line {line}:" in message


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match=r"jobs\.csv: manifest not found"):
        read_manifest(tmp_path / "jobs.csv")


# ----------------------------------------------------------------------------------------- command line


def test_bad_manifest_exits_2_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path / "jobs.csv", HEADER + "a.mp4,f.jpg,out/o.mp4\nb.mp4,f.jpg,out/o.mp4\n")
    code, out, err = batch_cli(capsys, "--manifest", str(path), "--quiet", "executor=local")
    assert code == 2 and out == ""
    output = tmp_path.resolve() / "out" / "o.mp4"
    assert err.strip() == f"swapstream: error: {path} line 3: output {output} is also the output of line 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.csv"]


@pytest.mark.parametrize(
    ("rows", "args", "problem"),
    [
        ("a.mp4,f.jpg,o.mp4,swap.nonsense=1\n", (), "line 2: unknown config key swap.nonsense"),
        ("a.mp4,f.jpg,o.mp4,encode.crf=high\n", (), "line 2: encode.crf='high': should be a valid number"),
        ("a.mp4,f.jpg,o.mp4\n", ("executor=slurm",), "executor='slurm': should be 'auto', 'ray' or 'local'"),
        ("a.mp4,f.jpg,o.mp4\n", ("--config", "nowhere.yaml"), "nowhere.yaml: config file not found"),
    ],
)
def test_bad_overrides_or_config_exit_2(tmp_path, capsys, rows, args, problem):
    path = write(tmp_path / "jobs.csv", HEADER + rows)
    code, out, err = batch_cli(capsys, "--manifest", str(path), "--quiet", *args)
    assert code == 2 and out == "" and problem in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.csv"]


@pytest.fixture
def fake_swap(monkeypatch):
    """pipeline.run.swap_video replaced: writes the input's bytes into the output; inputs named bad* fail."""
    from pipeline import run

    calls: list[str] = []

    def swap(input_path, source_path, output, cfg, progress=True, digest=False, pool=None):
        calls.append(Path(input_path).name)
        if Path(input_path).name.startswith("bad"):
            raise InputError(
                f"no face found in {source_path}: use a photo where the face is at least 64 px wide"
            )
        Path(output).write_bytes(Path(input_path).read_bytes())
        return Summary(3, 3, 3, 0.5, Path(output))

    monkeypatch.setattr(run, "swap_video", swap)
    return calls


def test_batch_summary_exit_codes_and_records(tmp_path, capsys, fake_swap):
    for name in ("a", "b", "bad"):
        write(tmp_path / "in" / f"{name}.mp4", name * 10)
    write(tmp_path / "in" / "face.png", "face")
    path = write(
        tmp_path / "jobs.csv",
        HEADER + "in/a.mp4,in/face.png,out/a.mp4\nin/bad.mp4,in/face.png,out/bad.mp4\n"
        "in/b.mp4,in/face.png,out/nested/b.mp4,encode.crf=20\n",
    )
    code, out, err = batch_cli(capsys, "--manifest", str(path), "--quiet", "executor=local")
    assert code == 1 and sorted(fake_swap) == ["a.mp4", "b.mp4", "bad.mp4"]
    lines = out.strip().splitlines()
    assert lines[0].startswith("ok      out/a.mp4: 3 frames")
    assert lines[1].startswith("failed  out/bad.mp4: no face found in")
    assert lines[2].startswith("ok      out/nested/b.mp4")  # output folders are made
    assert lines[3] == f"batch: 2 ok, 0 skipped, 1 failed (records: {tmp_path / 'jobs.records.jsonl'})"
    assert "job failed: out/bad.mp4" in err
    assert (tmp_path / "out" / "nested" / "b.mp4").read_text() == "b" * 10
    assert not (tmp_path / "out" / "bad.mp4").exists()

    fake_swap.clear()
    path.write_text(
        HEADER + "in/a.mp4,in/face.png,out/a.mp4\nin/b.mp4,in/face.png,out/nested/b.mp4,encode.crf=20\n"
    )
    records = tmp_path / "elsewhere" / "r.jsonl"
    code, out, _ = batch_cli(capsys, "--manifest", str(path), "--records", str(records), "executor=local")
    assert code == 0 and sorted(fake_swap) == ["a.mp4", "b.mp4"]  # new records file: nothing to skip
    code, out, _ = batch_cli(capsys, "--manifest", str(path), "--quiet", "executor=local")
    assert code == 0 and fake_swap == ["a.mp4", "b.mp4"]  # the default records file knows both
    assert out.strip().splitlines()[-1].startswith("batch: 0 ok, 2 skipped, 0 failed")


def test_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    from pipeline import batch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run_jobs", interrupted)
    path = write(tmp_path / "jobs.csv", HEADER + "a.mp4,f.jpg,o.mp4\n")
    code, out, err = batch_cli(capsys, "--manifest", str(path), "--quiet", "executor=local")
    assert code == 130 and out == "" and "interrupted" in err and "run again to resume" in err


def test_sigterm_stops_like_ctrl_c():
    """``ray job stop`` sends SIGTERM: it must unwind like Ctrl-C so the run cleans up after itself."""
    import time

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), manifest._sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is previous


# ----------------------------------------------------------------------------------------- end to end

CLIPS = [
    ("liveportrait_d20.mp4", "obama_a.jpg"),
    ("retalking_face_5.mp4", "rose_leslie_a.jpg"),
    ("sadtalker_WDA_KatieHill_000.mp4", "biden_b.jpg"),
]


@pytest.fixture(scope="module")
def media_batch(tmp_path_factory, data_dir) -> Path:
    """A folder with three 0.6 s clips (360 px), a grey photo with no face and jobs.csv listing four jobs."""
    from PIL import Image

    from tests.media_making import cut_360p

    root = tmp_path_factory.mktemp("batch")
    (root / "clips").mkdir()
    rows = []
    for i, (clip, face) in enumerate(CLIPS):
        cut = root / "clips" / f"clip{i}.mp4"
        cut_360p(VIDEOS / clip, cut, 0.6)
        rows.append(f"clips/clip{i}.mp4,{FACES / face},out/clip{i}.mp4,")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "grey.png")
    rows.insert(1, "clips/clip0.mp4,grey.png,out/grey.mp4,swap.target=largest")
    write(root / "jobs.csv", HEADER + "\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_batch_of_real_clips_isolates_the_bad_row_and_resumes(media_batch, capsys):
    manifest_path = media_batch / "jobs.csv"
    inputs = {p: p.read_bytes() for p in (media_batch / "clips").iterdir()}
    code, out, err = batch_cli(capsys, "--manifest", str(manifest_path), "--quiet", "executor=local")
    assert code == 1, err
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["ok", "failed", "ok", "ok"]
    assert "out/grey.mp4: no face found in" in lines[1] and "grey.png" in lines[1]
    assert lines[4].startswith("batch: 3 ok, 0 skipped, 1 failed")
    outs = sorted(p.name for p in (media_batch / "out").iterdir())
    assert outs == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]  # no output, partial or temporary, for the bad row
    records = [json.loads(x) for x in (media_batch / "jobs.records.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["failed", "ok", "ok", "ok"]
    assert all(r["frames"] and r["faces_swapped"] for r in records if r["status"] == "ok")
    assert all(p.read_bytes() == data for p, data in inputs.items())  # inputs never modified

    code, out, _ = batch_cli(capsys, "--manifest", str(manifest_path), "--quiet", "executor=local")
    lines = out.strip().splitlines()
    assert code == 1 and [line.split()[0] for line in lines[:4]] == [
        "skipped",
        "failed",
        "skipped",
        "skipped",
    ]
    assert lines[4].startswith("batch: 0 ok, 3 skipped, 1 failed")


@pytest.mark.slow
def test_two_node_cluster_batch_matches_in_process(media_batch, tmp_path, monkeypatch):
    """The three clips as one batch on a two-node Ray cluster (ray.cluster_utils.Cluster, reached through
    RAY_ADDRESS as a real cluster would be): every video gets exactly the in-process run's frames."""
    import ray
    from ray.cluster_utils import Cluster

    from pipeline import run
    from pipeline.batch import Job, run_jobs
    from pipeline.config import load_config

    digests: dict[tuple[str, str], str] = {}
    swap_video = run.swap_video

    def with_digest(*args, **kwargs):
        summary = swap_video(*args, **kwargs, digest=True)
        digests[(summary.output.parent.name, summary.output.name)] = summary.frames_digest
        return summary

    monkeypatch.setattr(run, "swap_video", with_digest)

    def batch(where: str, executor: str):
        (tmp_path / where).mkdir()
        jobs = [
            Job(media_batch / "clips" / f"clip{i}.mp4", FACES / face, tmp_path / where / f"clip{i}.mp4")
            for i, (_, face) in enumerate(CLIPS)
        ]
        cfg = load_config(None, [f"executor={executor}"])
        return run_jobs(jobs, cfg, tmp_path / f"{where}.records.jsonl", progress=False)

    local = batch("local", "local")
    ray.shutdown()  # an embedded instance of an earlier test
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        remote = batch("cluster", "ray")
        nodes = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(nodes) == 2
    assert all(o.ok for o in local) and all(o.ok for o in remote), [o.record for o in local + remote]
    for i in range(len(CLIPS)):
        assert digests[("cluster", f"clip{i}.mp4")] == digests[("local", f"clip{i}.mp4")]
