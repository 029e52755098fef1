"""The many-video runner (pipeline/batch.py): finished jobs are skipped and failures isolated, changes of
config, input or source redo a job, records survive a cut line, a job's overrides are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import ConfigError, InputError
from models.files import sha256_of
from pipeline.batch import Job, RecordStore, config_hash, job_config, run_jobs
from pipeline.run import Summary


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
