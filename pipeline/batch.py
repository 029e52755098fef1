"""Many swap jobs in one run: skip what is already done, isolate failures, record every finished job.

A run folder holds ``records.jsonl``, one JSON object per line, appended (and fsynced) as each job ends:

    {"job": "<output path relative to the run folder>", "input": ..., "source": ..., "output": ...,
     "input_sha256": ..., "source_sha256": ..., "config_sha256": ..., "output_sha256": ...,
     "frames": 250, "frames_expected": 250, "note": null | "<one line: frames lost to a damaged input>",
     "frames_with_face": 248, "faces_swapped": 248, "seconds": 61.2,
     "status": "ok" | "failed", "error": "<one line>" | null, "swapstream": "0.1.0", "finished": "<UTC ISO>"}

The newest line of a job wins. A job is skipped when its newest record is ``ok`` for the same input hash,
source hash and config hash, and its output file still exists with the recorded hash; anything else
(no record, a failed record, a changed input, source or config, an output that was removed or altered)
runs it again. So an interrupted run resumes where it stopped and a finished one is not redone.

The config hash is the sha256 of the canonical JSON (sorted keys, no spaces) of the job's effective config
(run config plus the job's overrides) without ``CONFIG_KEYS_NOT_HASHED``: settings that do not change the
frames written (which executor runs the stages — both write identical frames — Ray's tuning, and the
settings of benchmark scoring). Switching ``executor=local`` to ``ray`` therefore does not redo a run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pipeline
from models.errors import ConfigError, InputError, one_line
from models.files import sha256_of

RECORDS_NAME = "records.jsonl"
CONFIG_KEYS_NOT_HASHED = ("executor", "ray", "ffpp")


@dataclass(frozen=True)
class Job:
    """One swap: ``input`` video, ``source`` photo, ``output`` video, overrides (``key.path=value``)."""

    input: Path
    source: Path
    output: Path
    overrides: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What became of a job: its record (as written to ``records.jsonl``) and whether it was skipped."""

    job: Job
    record: dict
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"


@dataclass
class Pending:
    """A job that has to run, with its effective config and the hashes its record will carry."""

    job: Job
    key: str
    cfg: dict
    input_sha256: str
    source_sha256: str
    config_sha256: str


# ----------------------------------------------------------------------------------------- hashing


def config_hash(cfg: dict, ignore: Sequence[str] = CONFIG_KEYS_NOT_HASHED) -> str:
    """Hex sha256 of the canonical JSON of ``cfg`` without the top-level keys in ``ignore``."""
    kept = {k: v for k, v in cfg.items() if k not in ignore}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def job_config(cfg: dict, overrides: Sequence[str]) -> dict:
    """A copy of ``cfg`` with the job's ``key.path=value`` overrides applied and checked (``ConfigError``).

    Each overridden value must have the type of the value it replaces and, for settings with a fixed set of
    values, be one of them (the rules ``pipeline.config.load_config`` applies to the defaults).
    """
    from pipeline.config import with_overrides

    return with_overrides(cfg, overrides) if overrides else cfg


# ----------------------------------------------------------------------------------------- records


class RecordStore:
    """Append-only JSON-lines file of job records; the newest record of a job wins."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.skipped_lines = 0

    def load(self) -> dict[str, dict]:
        """Newest record per job key. Lines that are not a JSON object with a ``job`` key (a line cut short
        by a crash) are skipped and counted in ``skipped_lines``."""
        latest: dict[str, dict] = {}
        self.skipped_lines = 0
        if not self.path.is_file():
            return latest
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    self.skipped_lines += 1
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("job"), str):
                    self.skipped_lines += 1
                    continue
                latest[record["job"]] = record
        return latest

    def append(self, record: dict) -> None:
        """Add one record as one line and fsync (a line cut short by a crash is closed off first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
        with open(self.path, "a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.seek(0, os.SEEK_END)
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())


def job_key(job: Job, records_path: str | Path) -> str:
    """A job's name in the records: its output path relative to the run folder (absolute when outside)."""
    base = Path(records_path).resolve().parent
    out = Path(job.output).resolve()
    try:
        return out.relative_to(base).as_posix()
    except ValueError:
        return out.as_posix()


def is_done(record: dict | None, pending: Pending) -> bool:
    """True when ``record`` says this exact job finished and its output is still the one it wrote."""
    if not record or record.get("status") != "ok":
        return False
    if (record.get("input_sha256"), record.get("source_sha256"), record.get("config_sha256")) != (
        pending.input_sha256,
        pending.source_sha256,
        pending.config_sha256,
    ):
        return False
    output = Path(pending.job.output)
    return output.is_file() and sha256_of(output) == record.get("output_sha256")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _record(job: Job, key: str, **fields) -> dict:
    base = {
        "job": key,
        "input": str(job.input),
        "source": str(job.source),
        "output": str(job.output),
        "input_sha256": None,
        "source_sha256": None,
        "config_sha256": None,
        "output_sha256": None,
        "frames": None,
        "frames_expected": None,
        "note": None,
        "frames_with_face": None,
        "faces_swapped": None,
        "seconds": None,
        "status": "failed",
        "error": None,
        "swapstream": pipeline.__version__,
        "finished": _now(),
    }
    base.update(fields)
    return base


# ----------------------------------------------------------------------------------------- running

Done = Callable[[Pending, object], None]  # (pending job, Summary or the exception it raised)


def execute_pending(pending: list[Pending], on_done: Done, progress: bool = True) -> None:
    """Run every pending job via ``pipeline.run.swap_video``; call ``on_done`` once per job, in this thread,
    with its ``Summary`` or the exception that stopped it.

    Jobs whose config says ``executor=ray`` run ``ray.concurrent_videos`` at a time on one
    :class:`pipeline.executors.StagePool`: the videos share the stage actors (``ray.swap_actors`` swap
    actors, ``ray.stage_actors`` of every other stage), each with its own stage objects; decoding and
    encoding run in this process, one thread per video. Other jobs run one after another in-process.
    ``KeyboardInterrupt`` stops the run: the shared actors are killed, so running videos fail at once and
    leave no output, and the interrupt is raised again.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from pipeline import run
    from pipeline.config import with_overrides

    for p in pending:  # executor=auto: many videos share Ray's stage actors, one runs in-process
        if p.cfg["executor"] == "auto":
            p.cfg = with_overrides(p.cfg, [f"executor={run.choose_executor(p.cfg, videos=len(pending))}"])
    on_ray = [p for p in pending if p.cfg["executor"] == "ray"]
    for p in (p for p in pending if p.cfg["executor"] != "ray"):
        try:
            summary = run.swap_video(p.job.input, p.job.source, p.job.output, p.cfg, progress=progress)
        except Exception as exc:  # one bad job is recorded and reported; the others still run
            on_done(p, exc)
            continue
        on_done(p, summary)
    if not on_ray:
        return
    from pipeline.executors import StagePool
    from pipeline.ray_session import RayStopped, init_ray

    # here, in the main thread, before the video threads use it
    init_ray(gcs_reconnect_seconds=on_ray[0].cfg["ray"]["gcs_reconnect_seconds"])
    pool = StagePool.from_config(on_ray[0].cfg)
    workers = max(1, int(on_ray[0].cfg["ray"]["concurrent_videos"]))
    queue = list(on_ray)
    running: dict = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="video") as threads:
        try:
            while queue or running:
                while queue and len(running) < workers:
                    p = queue.pop(0)
                    args = (p.job.input, p.job.source, p.job.output, p.cfg)
                    running[threads.submit(run.swap_video, *args, progress=progress, pool=pool)] = p
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    p = running.pop(future)
                    exc = future.exception()
                    on_done(p, exc if exc is not None else future.result())
                    if isinstance(exc, RayStopped):  # no video after this one can run either
                        raise exc
        finally:
            pool.close()  # on an interrupt: running videos fail now (and remove their partial output)


def run_jobs(
    jobs: Sequence[Job],
    cfg: dict,
    records_path: str | Path,
    progress: bool = True,
) -> list[Outcome]:
    """Run ``jobs`` with ``cfg`` (plus each job's overrides); skip those already done (module doc).

    Every job that runs (or cannot start: a missing input, a bad override) gets a record in
    ``records_path``; a failure is reported on stderr in one line and the other jobs continue.
    Returns one Outcome per job, in the order of ``jobs``. Raises InputError when two jobs would write the
    same output file.
    """
    store = RecordStore(records_path)
    latest = store.load()
    keys = [job_key(j, records_path) for j in jobs]
    seen: dict[str, Job] = {}
    for job, key in zip(jobs, keys):
        if key in seen:
            raise InputError(f"{job.output}: two jobs write this output ({seen[key].input} and {job.input})")
        seen[key] = job

    outcomes: dict[str, Outcome] = {}
    pending: list[Pending] = []
    for job, key in zip(jobs, keys):
        try:
            job_cfg = job_config(cfg, job.overrides)
            for path, what in ((job.input, "input video"), (job.source, "source photo")):
                if not Path(path).is_file():
                    raise InputError(f"{path}: no such file ({what})")
            p = Pending(
                job,
                key,
                job_cfg,
                sha256_of(job.input),
                sha256_of(job.source),
                config_hash(job_cfg),
            )
        except (InputError, ConfigError, OSError) as exc:
            record = _record(job, key, error=one_line(exc))
            store.append(record)
            _report(key, record["error"])
            outcomes[key] = Outcome(job, record)
            continue
        if is_done(latest.get(key), p):
            outcomes[key] = Outcome(job, latest[key], skipped=True)
        else:
            pending.append(p)

    total = len(pending)
    if progress and len(jobs):
        print(
            f"swapstream: {len(jobs)} jobs, {len(jobs) - total} done before or not startable", file=sys.stderr
        )

    finished = [0]

    def on_done(p: Pending, result: object) -> None:
        hashes = {
            "input_sha256": p.input_sha256,
            "source_sha256": p.source_sha256,
            "config_sha256": p.config_sha256,
        }
        if isinstance(result, BaseException):
            record = _record(p.job, p.key, **hashes, error=one_line(result))
            _report(p.key, record["error"])
        else:
            record = _record(
                p.job,
                p.key,
                **hashes,
                output_sha256=sha256_of(p.job.output),
                frames=result.frames,
                frames_expected=result.frames_expected,
                note=result.note,
                frames_with_face=result.frames_with_face,
                faces_swapped=result.faces_swapped,
                seconds=round(float(result.seconds), 3),
                status="ok",
            )
        store.append(record)
        finished[0] += 1
        if progress and record["status"] == "ok":
            line = f"[{finished[0]}/{total}] {p.key}: {result.frames} frames, {result.seconds:.1f} s"
            print(f"swapstream: {line}", file=sys.stderr)
        outcomes[p.key] = Outcome(p.job, record)

    execute_pending(pending, on_done, progress=progress)
    return [outcomes[k] for k in keys]


def _report(key: str, error: str) -> None:
    print(f"swapstream: job failed: {key}: {error}", file=sys.stderr)
