"""Quality grid: many source photos on many short clips, scored and laid out on a contact sheet to look at.

python -m pipeline quality [--grid configs/quality.yaml] [--out runs/quality] [--only TEXT] [--jobs N]
                           [--rescore] [--config FILE] [key=value ...]

The grid file (``configs/quality.yaml``) names the clips (file, start second, evaluator HOG upsampling), the
cut length and width, the (clip, photo) pairs, and for photos whose person has another photo, that photo
(``references``: identity is also scored against it). Each clip is cut once into ``OUT/clips/`` (libx264 at
``crf``, scaled to at most ``max_width``, audio re-encoded to AAC; the cut is the "original" every output is
compared with). Each pair is swapped in-process with the swap config (``--config`` and overrides, as for
``swap``), the output scored with :func:`pipeline.evaluate.evaluate` (every frame), and the results written:

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
import io
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models.errors import InputError, SwapstreamError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_GRID = REPO / "configs" / "quality.yaml"
TILE = 160  # px, side of one contact-sheet tile
LABEL_W = 150  # px, width of the label column
FACE_MARGIN = 0.45  # tiles show the face box grown by this share of its size on each side

# The done-when targets of the quality issue, checked per pair (median over pairs for the mouth error).
TARGETS = {
    "nearer_source_share": 0.90,  # at least
    "mouth_open_error_iod": 0.02,  # median over pairs, at most
    "flicker": 1.10,  # at most
    "background_psnr_db": 35.0,  # worst frame, at least
    "jitter_iod": 0.006,  # talking heads, at most
}


# Limits of the evaluator's artifact measures (pipeline.evaluate.artifact_measures, medians over a pair's
# frames), calibrated on outputs labelled by eye (tests/artifact_labels.yaml): above them a viewer sees
# pasted hair or glasses, a painted-over fringe or frame, or a seam (the seam, delta E of the tone step at
# the face's border, separates the labels imperfectly: see the README).
ARTIFACT_LIMITS = {
    "foreign_share": 0.03,
    "occluder_covered_share": 0.03,
    "seam": 5.5,
}


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
    from pipeline.evaluate import evaluate
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


def _get(result: dict, *keys: str) -> float | None:
    node: Any = result
    for k in keys:
        if not isinstance(node, dict) or node.get(k) is None:
            return None
        node = node[k]
    return float(node)


COLUMNS = (  # (header, path in the evaluator's dict, format)
    ("nearer src", ("identity", "nearer_source_share"), ".0%"),
    ("nearer ref", ("identity", "nearer_reference_share"), ".0%"),
    ("d(src)", ("identity", "distance_to_source", "median"), ".3f"),
    ("d(orig)", ("identity", "distance_to_original", "median"), ".3f"),
    ("mouth open", ("mouth_open_error_iod", "median"), ".3f"),
    ("eyes open", ("eyes_open_error_iod", "median"), ".3f"),
    ("expr", ("expression_error_iod", "median"), ".3f"),
    ("flicker", ("flicker",), ".2f"),
    ("jitter", ("jitter_iod",), ".4f"),
    ("bg PSNR", ("integrity", "background_psnr_db", "worst_frame"), ".1f"),
    ("foreign", ("artifacts", "foreign_share"), ".3f"),
    ("covered", ("artifacts", "occluder_covered_share"), ".3f"),
    ("seam", ("artifacts", "seam"), ".2f"),
)


# Per-pair checks, in the order a miss is named: (name, path in the evaluator's dict, limit, the value must
# stay above the limit). The mouth-open target is a median over pairs, checked in the table's last row.
CHECKS = (
    ("identity", ("identity", "nearer_source_share"), TARGETS["nearer_source_share"], True),
    ("flicker", ("flicker",), TARGETS["flicker"], False),
    ("background", ("integrity", "background_psnr_db", "worst_frame"), TARGETS["background_psnr_db"], True),
    ("jitter", ("jitter_iod",), TARGETS["jitter_iod"], False),
    *((key, ("artifacts", key), limit, False) for key, limit in ARTIFACT_LIMITS.items()),
)


def misses(result: dict) -> list[str]:
    """The per-pair targets this pair misses (None values are not misses: nothing was measured). The jitter
    target is the talking heads' (``talking_head`` False: a clip the grid does not list as one)."""
    out = []
    for name, path, limit, floor in CHECKS:
        if name == "jitter" and result.get("talking_head") is False:
            continue
        value = _get(result, *path)
        if value is not None and (value < limit if floor else value > limit):
            out.append(name)
    return out


def markdown(results: list[dict], grid_path: Path, cfg_text: str) -> str:
    """``quality.md``: one row per pair, then the medians over pairs."""
    head = ["pair", "swapped", "scored", *[c[0] for c in COLUMNS], "misses"]
    lines = [
        "# Quality grid",
        "",
        f"Grid: `{grid_path}`; swap config: {cfg_text}. Targets: identity nearer the source in >= "
        f"{TARGETS['nearer_source_share']:.0%} of scored frames, median mouth-open error <= "
        f"{TARGETS['mouth_open_error_iod']} IOD, flicker <= {TARGETS['flicker']}, background PSNR >= "
        f"{TARGETS['background_psnr_db']} dB, jitter <= {TARGETS['jitter_iod']} IOD on the talking heads "
        "(the grid's talking_heads; other clips' jitter is shown, not checked). "
        "nearer ref: the same share against another photo of the source's person (the grid's references; "
        "n/a without one), which what only the pasted photo has (a hat, its light) cannot earn. "
        "Per-pair JSON in scores/.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        if "error" in r:
            swapped = f"{r['faces_swapped']}/{r['swap_frames']}" if "faces_swapped" in r else "-"
            lines.append(f"| {r['pair']} | {swapped} | {r['error']} |" + " |" * (len(head) - 3))
            continue
        cells = [r["pair"], f"{r['faces_swapped']}/{r['swap_frames']}", str(r["frames"]["scored"])]
        for _, path, spec in COLUMNS:
            v = _get(r, *path)
            cells.append("n/a" if v is None else format(v, spec))
        cells.append(", ".join(misses(r)) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    med = ["**median**", "", ""]
    for _, path, spec in COLUMNS:
        vals = [v for v in (_get(r, *path) for r in results if "error" not in r) if v is not None]
        med.append("n/a" if not vals else format(float(np.median(vals)), spec))
    med.append("")
    lines.append("| " + " | ".join(med) + " |")
    return "\n".join(lines) + "\n"


def _face_box(image: np.ndarray, upsample: int) -> np.ndarray | None:
    from pipeline.evaluate import detect_faces

    faces = detect_faces(image, upsample)
    return faces[0].box if faces else None


def _zoom(image: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """A ``TILE``² tile of ``image`` around ``box`` grown by ``FACE_MARGIN`` (the whole image when None)."""
    from pipeline.ffpp import _fit

    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(x2 - x1, y2 - y1) * (1 + 2 * FACE_MARGIN)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        h, w = image.shape[:2]
        a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        image = image[b : int(min(h, cy + side / 2)), a : int(min(w, cx + side / 2))]
    return _fit(image, TILE)


def sheet_row(result: dict, clip: Path, upsample: int) -> np.ndarray:
    """``(TILE, LABEL_W + 5 TILE, 3) uint8``: label | original | source | output at 1/3 of the clip |
    original | output at 2/3."""
    from PIL import Image, ImageDraw

    from pipeline.evaluate import _frames
    from pipeline.run import load_image

    out_path = Path(result["output"])
    n = int(result["frames"]["original"])
    picks = [n // 3, (2 * n) // 3]
    want: dict[int, dict[str, np.ndarray]] = {i: {} for i in picks}
    for key, path in (("orig", clip), ("out", out_path)):
        for index, (_, frame) in enumerate(_frames(path, 16)):
            if index in want:
                want[index][key] = frame
            if index >= max(picks):
                break
    photo = load_image(result["source"])
    tiles = []
    for k, index in enumerate(picks):
        orig = want[index].get("orig")
        out = want[index].get("out")
        box = _face_box(orig, upsample) if orig is not None else None
        tiles.append(_zoom(orig, box) if orig is not None else _zoom(np.zeros((8, 8, 3), np.uint8), None))
        if k == 0:
            tiles.append(_zoom(photo, _face_box(photo, 1)))
        tiles.append(_zoom(out, box) if out is not None else _zoom(np.zeros((8, 8, 3), np.uint8), None))
    label = Image.new("RGB", (LABEL_W, TILE), (0, 0, 0))
    draw = ImageDraw.Draw(label)
    draw.text((4, 4), result["clip"], fill=(255, 255, 0))
    draw.text((4, 18), Path(result["photo"]).stem[:24], fill=(255, 255, 0))
    y = 40
    for header, path, spec in COLUMNS:
        v = _get(result, *path)
        if v is not None and header in (
            "nearer src",
            "mouth open",
            "flicker",
            "jitter",
            "foreign",
            "covered",
            "seam",
        ):
            draw.text((4, y), f"{header} {format(v, spec)}", fill=(255, 255, 255))
            y += 13
    bad = misses(result)
    if bad:
        draw.text((4, y), "MISS " + ",".join(bad)[:22], fill=(255, 80, 80))
    return np.concatenate([np.asarray(label), *tiles], axis=1)


def contact_sheet(rows: list[np.ndarray]) -> bytes:
    """PNG bytes of the rows under a header line."""
    from PIL import Image, ImageDraw

    width = LABEL_W + 5 * TILE
    header = Image.new("RGB", (width, 20), (0, 0, 0))
    draw = ImageDraw.Draw(header)
    for i, text in enumerate(["original", "source", "output", "original", "output"]):
        draw.text((LABEL_W + i * TILE + 4, 4), text, fill=(255, 255, 255))
    parts = [np.asarray(header), *rows] if rows else [np.asarray(header)]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(parts, axis=0)).save(buf, format="PNG")
    return buf.getvalue()


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
