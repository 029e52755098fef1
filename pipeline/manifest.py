"""Many videos from one manifest: ``python -m pipeline batch --manifest jobs.csv [key=value ...]``.

A manifest lists one swap per row, as CSV (``.csv``) or JSON lines (``.jsonl``, ``.json``)::

    input,source,output,overrides
    clips/a.mp4,faces/obama.jpg,out/a.mp4,
    clips/b.mp4,faces/rose.jpg,out/b.mp4,swap.target=largest encode.crf=20

    {"input": "clips/a.mp4", "source": "faces/obama.jpg", "output": "out/a.mp4"}
    {"input": "clips/b.mp4", "source": "faces/rose.jpg", "output": "b.mp4", "overrides": ["encode.crf=20"]}

``overrides`` is optional: a space-separated string of ``key.path=value`` (shell-style quoting allowed) or,
in JSON, a list of such strings; they apply to that row on top of the run's config. An empty ``output``
means ``<input stem>.swapped.mp4`` beside the input. Relative paths are resolved against the manifest's
folder. Blank CSV rows and rows whose first cell starts with ``#`` are skipped.

The jobs run through :func:`pipeline.batch.run_jobs`: finished videos are recorded (default
``<manifest stem>.records.jsonl`` beside the manifest) and skipped when the batch is run again; a bad
video is reported and the others finish. A manifest that cannot be used stops before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from models.errors import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigError,
    InputError,
)
from pipeline.batch import Job, Outcome
from pipeline.ray_session import RayStopped

COLUMNS = ("input", "source", "output", "overrides")
REQUIRED = ("input", "source", "output")
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class Row:
    """One job of a manifest and the line of the manifest it comes from (1-based)."""

    line: int
    job: Job


# ----------------------------------------------------------------------------------------- reading


def read_manifest(path: str | Path) -> list[Row]:
    """The jobs a manifest lists, in file order; ``InputError`` naming the file and line when it is unusable.

    Checked: the file exists and is CSV or JSON lines (by its extension), the CSV header has the
    ``input``, ``source`` and ``output`` columns and no others than ``overrides``, no row has an empty
    input or source, every override has the form ``key.path=value``, no two rows write the same output,
    no output is another row's input, and at least one job is listed. The files a row names are not
    opened here: a missing video is a failed job of the batch, not a bad manifest.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: manifest not found" if not p.exists() else f"{p}: manifest is not a file")
    suffix = p.suffix.lower()
    if suffix in CSV_SUFFIXES:
        reader = _csv_rows
    elif suffix in JSONL_SUFFIXES:
        reader = _jsonl_rows
    else:
        raise InputError(
            f"{p}: unknown manifest format {p.suffix or '(no extension)'!r}; "
            f"use .csv (header input,source,output[,overrides]) or .jsonl (one JSON object a line)"
        )
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read the manifest ({exc.strerror})") from None
    base = p.resolve().parent
    rows = [_row(p, base, line, fields) for line, fields in reader(p, text)]
    if not rows:
        raise InputError(f"{p}: no jobs listed; add rows of input, source, output")
    _check_outputs(p, rows)
    return rows


def _csv_rows(p: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, fields) of each CSV row after the header."""
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines, skipinitialspace=True)
    header: list[str] | None = None
    for cells in reader:
        line = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if header is None:
            header = [c.lower() for c in cells]
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise InputError(
                    f"{p} line {line}: unknown column {unknown[0]!r}; the header is input,source,output"
                    "[,overrides]"
                )
            duplicated = sorted({c for c in header if header.count(c) > 1})
            if duplicated:
                raise InputError(f"{p} line {line}: column {duplicated[0]!r} appears twice in the header")
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise InputError(
                    f"{p} line {line}: missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)}; the header is input,source,output[,overrides]"
                )
            continue
        if len(cells) > len(header):
            raise InputError(
                f"{p} line {line}: {len(cells)} fields but the header has {len(header)} "
                "(quote a value that holds a comma)"
            )
        yield line, dict(zip(header, cells))
    if header is None:
        raise InputError(f"{p}: empty manifest; the first line is the header input,source,output[,overrides]")


def _jsonl_rows(p: Path, text: str) -> Iterator[tuple[int, dict]]:
    """(line, object) of each non-blank JSON line."""
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{p} line {line}: not valid JSON ({exc.msg}); write one object a line"
            ) from None
        if not isinstance(obj, dict):
            raise InputError(
                f"{p} line {line}: expected a JSON object like "
                '{"input": ..., "source": ..., "output": ...}, got ' + type(obj).__name__
            )
        unknown = [k for k in obj if k not in COLUMNS]
        if unknown:
            raise InputError(
                f"{p} line {line}: unknown key {unknown[0]!r}; the keys are input, source, output, overrides"
            )
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            raise InputError(
                f"{p} line {line}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            )
        for key in REQUIRED:
            if obj[key] is not None and not isinstance(obj[key], str):
                raise InputError(f"{p} line {line}: {key} should be a path string, got {obj[key]!r}")
        yield line, obj


def _row(p: Path, base: Path, line: int, fields: dict) -> Row:
    """A Row from one record's fields: paths resolved against ``base``, overrides split and checked."""
    where = f"{p} line {line}"
    values = {k: (fields.get(k) or "").strip() for k in REQUIRED}
    for key in ("input", "source"):
        if not values[key]:
            raise InputError(f"{where}: empty {key}; give the {_WHAT[key]} for this row")
    input_path = _resolve(base, values["input"])
    if values["output"]:
        output = _resolve(base, values["output"])
    else:
        from pipeline.run import default_output

        output = default_output(input_path)
    return Row(line, Job(input_path, _resolve(base, values["source"]), output, _overrides(where, fields)))


_WHAT = {"input": "video to change", "source": "photo of the face to put in"}


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _overrides(where: str, fields: dict) -> tuple[str, ...]:
    """The row's overrides as a tuple of ``key.path=value`` strings (a string is split shell-style)."""
    from pipeline.config import parse_override

    value = fields.get("overrides")
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            items = shlex.split(value)
        except ValueError as exc:
            raise InputError(f"{where}: overrides {value!r}: {exc}") from None
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value if v.strip()]
    else:
        raise InputError(f"{where}: overrides should be a list of key.path=value strings, got {value!r}")
    for item in items:
        try:
            parse_override(item)
        except ConfigError as exc:
            raise InputError(f"{where}: {exc}") from None
    return tuple(items)


def _check_outputs(p: Path, rows: list[Row]) -> None:
    """No two rows write one output; no row writes over the input of another."""
    outputs: dict[Path, int] = {}
    inputs = {_real(r.job.input): r.line for r in rows}
    for row in rows:
        out = _real(row.job.output)
        if out in outputs:
            raise InputError(
                f"{p} line {row.line}: output {row.job.output} is also the output of line {outputs[out]}"
            )
        outputs[out] = row.line
        if out in inputs:
            raise InputError(
                f"{p} line {row.line}: output {row.job.output} is the input video of line {inputs[out]}; "
                "choose another output"
            )


def _real(path: Path) -> Path:
    return Path(path).resolve()


def check_overrides(p: str | Path, rows: list[Row], cfg: dict) -> None:
    """Every row's overrides name real config keys with values of the right type (``InputError``)."""
    from pipeline.config import with_overrides

    for row in rows:
        if row.job.overrides:
            try:
                with_overrides(cfg, row.job.overrides)
            except ConfigError as exc:
                raise InputError(f"{p} line {row.line}: {exc}") from None


def default_records(manifest: str | Path) -> Path:
    """``<manifest stem>.records.jsonl`` beside the manifest."""
    p = Path(manifest)
    return p.with_name(f"{p.stem}.records.jsonl")


# ----------------------------------------------------------------------------------------- command line


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM (``ray job stop``) stops the run the way Ctrl-C does, so partial outputs are removed.

    Later SIGTERMs are ignored while that clean-up runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = [False]

    def handler(signum, frame) -> None:
        if fired[0]:
            return
        fired[0] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def outcome_line(outcome: Outcome, key: str) -> str:
    """One line for one job: ``ok``, ``skipped`` or ``failed`` with its output and what happened."""
    record = outcome.record
    if outcome.skipped:
        return f"skipped {key}: finished before (records)"
    if outcome.ok:
        return (
            f"ok      {key}: {record.get('frames')} frames, {record.get('faces_swapped')} faces swapped, "
            f"{record.get('seconds')} s"
        )
    return f"failed  {key}: {record.get('error')}"


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline batch``: exit 0 all ok or skipped, 1 some job failed, 2 bad manifest or config."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline batch",
        description="swap many videos listed in a CSV/JSONL manifest (finished ones are skipped on a rerun)",
    )
    parser.add_argument(
        "--manifest", required=True, help="CSV (input,source,output[,overrides]) or JSON lines file"
    )
    parser.add_argument(
        "--records", help="record of finished jobs (default: <manifest stem>.records.jsonl beside it)"
    )
    parser.add_argument("--config", help="YAML config merged over configs/default.yaml")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides for every job, e.g. executor=local",
    )
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")

    from pipeline.batch import job_key, run_jobs
    from pipeline.cli import guarded
    from pipeline.config import load_config

    records = Path(args.records) if args.records else default_records(args.manifest)
    resume = f"finished videos are recorded in {records}: run again to resume"

    def batch() -> int:
        cfg = load_config(args.config, [*args.overrides, *extra])
        rows = read_manifest(args.manifest)
        check_overrides(args.manifest, rows, cfg)
        jobs = [r.job for r in rows]
        try:
            with _sigterm_as_interrupt():
                for job in jobs:  # a batch writes into folders that may not exist yet
                    Path(job.output).parent.mkdir(parents=True, exist_ok=True)
                outcomes = run_jobs(jobs, cfg, records, progress=not args.quiet)
        except OSError as exc:  # an output folder that cannot be made, a records file that cannot be written
            raise InputError(str(exc)) from None
        except RayStopped as exc:
            raise RayStopped(f"{exc}; {resume}") from None
        counts = {"ok": 0, "skipped": 0, "failed": 0}
        for outcome in outcomes:
            print(outcome_line(outcome, job_key(outcome.job, records)), flush=True)
            counts["skipped" if outcome.skipped else "ok" if outcome.ok else "failed"] += 1
        print(
            f"batch: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed "
            f"(records: {records})",
            flush=True,
        )
        return EXIT_FAILED if counts["failed"] else EXIT_OK

    return guarded(batch, f"no partial output left; {resume}", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
