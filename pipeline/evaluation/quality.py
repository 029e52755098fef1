"""Quality grid: many source photos on many short clips, scored and laid out on a contact sheet to look at.

python -m pipeline quality [--grid configs/quality.yaml] [--out runs/quality] [--only TEXT] [--jobs N]
                           [--rescore] [--config FILE] [key=value ...]

The grid file (``configs/quality.yaml``) names the clips (file, start second, evaluator HOG upsampling), the
cut length and width, the (clip, photo) pairs, and for photos whose person has another photo, that photo
(``references``: identity is also scored against it). Each clip is cut once into ``OUT/clips/`` (libx264 at
``crf``, scaled to at most ``max_width``, audio re-encoded to AAC; the cut is the "original" every output is
compared with). Each pair is swapped in-process with the swap config (``--config`` and overrides, as for
``swap``), the output scored with :func:`pipeline.evaluation.evaluate.evaluate` (every frame), and the
results written (the table and the sheet by :mod:`pipeline.evaluation.quality_report`):

- ``OUT/scores/<clip>__<photo>.json``: the evaluator's JSON of each pair (plus swap wall time);
- ``OUT/quality.md``: a row per pair (identity moved, mouth-open error, flicker, jitter, background PSNR,
  the artifact measures) with the medians, and the targets each pair misses;
- ``OUT/quality.png``: the contact sheet, a row per pair: original | source | output at one third of the cut,
  then original | output at two thirds, zoomed on the face.

Outputs made from the shared media stay in ``OUT`` (under ``runs/``, ignored by git): never publish them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from models.errors import InputError, SwapstreamError
from pipeline.evaluation.quality_report import contact_sheet, markdown, misses, sheet_row

REPO = Path(__file__).resolve().parents[2]
DEFAULT_GRID = REPO / "configs" / "quality.yaml"


def load_grid(path: str | Path) -> dict:
    """The grid file as a dict with absolute clip and photo paths; InputError for a bad file or entry."""
    p = Path(path)
    try:
        grid = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{p}: cannot read the quality grid ({exc})") from None
    if not isinstance(grid, dict) or not {"data", "clips", "pairs"} <= set(grid):
        raise InputError(f"{p}: a quality grid needs data, clips and pairs")
    data = Path(grid["data"])
    data = data if data.is_absolute() else (REPO / data).resolve()
    clips = {}
    for name, entry in grid["clips"].items():
        if not (isinstance(entry, list) and len(entry) == 3):
            raise InputError(f"{p}: clip {name}: give [file, start second, HOG upsampling]")
        clips[name] = {"path": data / entry[0], "start": float(entry[1]), "upsample": int(entry[2])}
    heads = grid.get("talking_heads", list(clips))
    if not (isinstance(heads, list) and all(h in clips for h in heads)):
        raise InputError(f"{p}: talking_heads: give a list of the grid's clip names")
    references = grid.get("references") or {}
    if not isinstance(references, dict):
        raise InputError(f"{p}: references: give photo: another photo of the same person")
    pairs = []
    for entry in grid["pairs"]:
        clip, photo = entry
        if clip not in clips:
            raise InputError(f"{p}: pair {entry}: no clip named {clip}")
        pair = {"clip": clip, "photo": photo, "photo_path": data / "faces" / photo}
        pair["talking_head"] = clip in heads
        if photo in references:
            pair["reference_path"] = data / "faces" / references[photo]
        pairs.append(pair)
    for item in [*clips.values(), *pairs]:
        for key in ("path", "photo_path", "reference_path"):
            if key in item and not item[key].is_file():
                raise InputError(f"{item[key]}: listed in {p} but missing")
    return {
        "clips": clips,
        "pairs": pairs,
        "seconds": float(grid.get("seconds", 3.0)),
        "max_width": int(grid.get("max_width", 640)),
        "crf": int(grid.get("crf", 16)),
    }


def pair_name(pair: dict) -> str:
    return f"{pair['clip']}__{Path(pair['photo']).stem}"


def cut_clip(source: Path, dest: Path, start: float, seconds: float, max_width: int, crf: int) -> None:
    """``seconds`` of ``source`` from ``start``, scaled to at most ``max_width`` wide (even sizes), libx264
    at ``crf`` (the same bytes every time: :func:`stages.encode.x264_options`) and AAC, written atomically
    to ``dest`` (ffmpeg-python over the ffmpeg of imageio-ffmpeg)."""
    import ffmpeg
    import imageio_ffmpeg

    from stages.encode import x264_options

    tmp = dest.with_name(f".{dest.stem}.partial{dest.suffix}")
    stream = ffmpeg.input(str(source), ss=f"{start:g}", t=f"{seconds:g}")
    video = stream.video.filter("scale", f"min({max_width},iw)", -2)
    out = ffmpeg.output(
        video,
        stream.audio,
        str(tmp),
        vcodec="libx264",
        preset="veryfast",
        crf=crf,
        acodec="aac",
        pix_fmt="yuv420p",
        loglevel="error",
        **x264_options({"codec": "libx264"}),  # the same cut on every run
    )
    try:
        ffmpeg.run(out, cmd=imageio_ffmpeg.get_ffmpeg_exe(), overwrite_output=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{source}: cannot cut ({exc.stderr.decode(errors='replace').strip()[:200]})"
        ) from None
    tmp.replace(dest)


def _run_pair(job: tuple[dict, Path, Path, dict, int]) -> dict:
    """Swap one pair in-process and score it; the evaluator's dict plus ``swap_seconds`` (or ``error``)."""
    pair, clip, out_dir, cfg, upsample, rescore = job
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.run import swap_video

    name = pair_name(pair)
    output = out_dir / "outputs" / f"{name}.mp4"
    started = time.perf_counter()
    head = {"pair": name, "clip": pair["clip"], "photo": pair["photo"], "talking_head": pair["talking_head"]}
    previous = out_dir / "scores" / f"{name}.json"
    if rescore:  # score the output already there again (never swap anew: it would mix code versions)
        old = json.loads(previous.read_text()) if previous.is_file() else {}
        keys = ("swap_seconds", "faces_swapped", "swap_frames")
        if not output.is_file() or any(k not in old for k in keys):
            return {**head, "error": "rescore: no earlier swap of this pair in this folder"}
        swap = {k: old[k] for k in keys}
    else:
        try:
            output.unlink(missing_ok=True)
            summary = swap_video(clip, pair["photo_path"], output, cfg, progress=False)
        except SwapstreamError as exc:
            return {**head, "error": f"swap: {exc}"}
        swap = {
            "swap_seconds": time.perf_counter() - started,
            "faces_swapped": summary.faces_swapped,
            "swap_frames": summary.frames,
        }
    done = {**head, "output": str(output), "source": str(pair["photo_path"]), **swap}
    try:
        result = evaluate(
            clip, output, pair["photo_path"], cfg, upsample=upsample, reference=pair.get("reference_path")
        )
    except SwapstreamError as exc:  # e.g. the evaluator's detector finds no face in the photo: still shown
        return {**done, "frames": {"original": swap["swap_frames"]}, "error": f"not scored: {exc}"}
    return {**result, **done}


def run_grid(
    grid_path: Path,
    out: Path,
    cfg: dict,
    only: str | None = None,
    jobs: int = 1,
    cfg_text: str = "defaults",
    rescore: bool = False,
) -> list[dict]:
    """Cut the clips, swap and score every pair (``jobs`` at once), write quality.md and quality.png.

    rescore: keep the outputs already in ``out`` and only score them again (after a change to the evaluator).
    """
    from models.files import write_bytes_atomic

    grid = load_grid(grid_path)
    wanted = [w for w in (only or "").split(",") if w]
    pairs = [p for p in grid["pairs"] if not wanted or any(w in pair_name(p) for w in wanted)]
    if not pairs:
        raise InputError(f"{grid_path}: no pair matches --only {only!r}")
    for sub in ("clips", "outputs", "scores"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    clip_paths = {}
    for name in sorted({p["clip"] for p in pairs}):
        c = grid["clips"][name]
        dest = out / "clips" / f"{name}-{c['start']:g}s-{grid['seconds']:g}s-w{grid['max_width']}.mp4"
        if not dest.is_file():
            cut_clip(c["path"], dest, c["start"], grid["seconds"], grid["max_width"], grid["crf"])
        clip_paths[name] = dest
    cfg = {**cfg, "executor": "local"}
    if jobs > 1:  # each worker its own torch thread: the cores are shared, not oversubscribed
        cfg = {**cfg, "runtime": {**cfg["runtime"], "torch_threads": 1}}
    work = [
        (p, clip_paths[p["clip"]], out, cfg, grid["clips"][p["clip"]]["upsample"], rescore) for p in pairs
    ]
    with ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        results = _collect((pool.map if pool else map)(_run_pair, work), len(work), out)
    write_bytes_atomic(out / "quality.md", markdown(results, grid_path, cfg_text).encode())
    rows = [
        sheet_row(r, clip_paths[r["clip"]], grid["clips"][r["clip"]]["upsample"])
        for r in results
        if "output" in r
    ]
    write_bytes_atomic(out / "quality.png", contact_sheet(rows))
    return results


def _collect(iterator, total: int, out: Path) -> list[dict]:
    """Each pair's result as it arrives: written to ``out/scores`` and reported in one line."""
    from models.files import write_json_atomic

    started = time.perf_counter()
    results = []
    for k, r in enumerate(iterator, 1):
        results.append(r)
        write_json_atomic(out / "scores" / f"{r['pair']}.json", r)
        status = r.get("error") or ", ".join(misses(r)) or "ok"
        print(f"[{k}/{total}] {r['pair']}: {status} ({time.perf_counter() - started:.0f} s)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline quality", description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default=str(DEFAULT_GRID), help="pairs file (default configs/quality.yaml)")
    parser.add_argument("--out", default="runs/quality", help="output folder (default runs/quality)")
    parser.add_argument("--only", help="only pairs whose name has one of these (comma-separated)")
    parser.add_argument("--jobs", type=int, default=2, help="pairs swapped at once (default 2)")
    parser.add_argument("--config", help="swap config merged over configs/default.yaml")
    parser.add_argument("--rescore", action="store_true", help="score the outputs already in --out again")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_args(argv)
    from pipeline.cli import guarded
    from pipeline.config import load_config

    def grid() -> str:
        cfg = load_config(args.config, args.overrides)
        text = (
            " ".join([*(["--config " + args.config] if args.config else []), *args.overrides]) or "defaults"
        )
        results = run_grid(
            Path(args.grid), Path(args.out), cfg, args.only, max(1, args.jobs), text, args.rescore
        )
        failed = [r["pair"] for r in results if "error" in r]
        line = (
            f"quality: {len(results)} pairs, {len(failed)} failed; {Path(args.out) / 'quality.md'}, "
            f"{Path(args.out) / 'quality.png'}"
        )
        return line + ("\nfailed: " + json.dumps(failed) if failed else "")

    return guarded(grid, "quality.md and quality.png not written", debug=args.debug)
