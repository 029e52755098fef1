"""The ``prepare-faces`` command: aligned ``size``² RGB training crops of every usable face in photos, videos.

``prepare-faces INPUT... --out DIR``: photos, videos or folders of them in; PNG crops and ``index.jsonl`` out
(cut by :mod:`pipeline.training.extract`, as the FaceShifter generator's registry entry says).
Names are deterministic, so a second run into the same folder only adds what is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from models.errors import InputError, first_line
from pipeline.training.extract import (
    CropMaker,
    MediaFile,
    collect_inputs,
    image_batch,
    looks_like_image,
    sampled_batches,
    skip_reason,
)

PROG = "prepare-faces"


def prepare_faces(
    inputs: list[str | Path],
    out_dir: str | Path,
    cfg: dict,
    *,
    size: int = 256,
    every: int = 5,
    max_per_input: int | None = None,
    min_face: int = 64,
    progress: bool = True,
    template: str = "ghost",
) -> dict:
    """Cut aligned ``size``² face crops out of photos, videos and folders of them into ``out_dir``.

    inputs: image files (.jpg .jpeg .png .bmp .webp), video files (.mp4 .mov .mkv .avi .webm) or folders
    searched recursively for both. Videos are streamed; every ``every``-th frame (0, every, 2·every, ...)
    is searched for faces. Faces whose MTCNN box is under ``min_face`` px on its shorter side are dropped;
    at most ``max_per_input`` crops come from one file (None: all). Crops are ``(size, size, 3) uint8`` RGB
    PNGs named ``<stem>_<8 hex>_f<frame:06d>_<k>.png`` (photos are frame 0); ``out_dir/index.jsonl`` holds
    one line per crop (file, source, frame, box, score, points5, affine frame → crop, size, template).
    template: ``ghost`` (GHOST's crop, the learned swaps' default) or ``ffhq`` (the latent swap's).

    Crops already in ``out_dir`` are not rewritten and their index lines not repeated; inputs are only read.
    Missing or unreadable inputs are skipped with a one-line warning on stderr. Raises InputError when
    ``out_dir`` is a file or no input holds any image or video.

    Returns ``{"inputs", "inputs_used", "frames_decoded", "frames_read", "faces_kept", "crops_written",
    "crops_existing", "faces_too_small", "skipped": [{"path", "reason"}], "out_dir", "index", "seconds"}``:
    inputs counts the image and video files found, inputs_used those that could be read; frames_read counts
    the frames searched for faces (a photo is one); faces_kept = crops_written + crops_existing.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    if size < 16 or every < 1 or min_face < 1 or (max_per_input is not None and max_per_input < 1):
        raise ValueError(
            f"need size >= 16, every >= 1, min_face >= 1, max_per_input >= 1 or None; got size={size}, "
            f"every={every}, min_face={min_face}, max_per_input={max_per_input}"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out is a file; give a folder for the crops")
    out_resolved = out.resolve()
    media, skipped = collect_inputs(inputs, out_resolved)

    def warn(message: str) -> None:
        tqdm.write(f"{PROG}: warning: {first_line(message)}", file=sys.stderr)

    for item in skipped:
        warn(f"skipped {item['path']}: {item['reason']}")
    if not media:
        names = ", ".join(str(p) for p in inputs) or "(none given)"
        raise InputError(f"no image or video found in {names}: give photos, videos or folders holding them")
    out.mkdir(parents=True, exist_ok=True)

    from PIL.Image import DecompressionBombError

    from pipeline.run import load_image
    from stages.decode import probe

    # Check the videos first (cheap: the first frame) for the bar's total and to report bad files early.
    usable: list[MediaFile] = []
    total = 0
    for item in media:
        if item.kind == "unknown" and looks_like_image(item.path):
            item = MediaFile(item.path, "image")
        if item.kind == "image":
            usable.append(item)
            total += 1
            continue
        try:
            info = probe(item.path)
        except InputError as exc:
            if item.kind == "unknown":
                skipped.append({"path": str(item.path), "reason": "neither a readable image nor a video"})
            else:
                skipped.append({"path": str(item.path), "reason": skip_reason(exc, item.path)})
            warn(f"skipped {item.path}: {skipped[-1]['reason']}")
            continue
        usable.append(MediaFile(item.path, "video"))
        total += info.frames

    batch_size = int(cfg["batch_size"])
    maker = CropMaker(cfg, out, size, min_face, warn, template)
    bar = tqdm(total=total or None, unit="frame", desc=PROG, disable=not progress, dynamic_ncols=True)
    maker.bar = bar
    used = 0
    try:
        for item in usable:
            budget = max_per_input
            if item.kind == "image":
                try:
                    image = load_image(item.path)
                except (InputError, DecompressionBombError) as exc:
                    skipped.append({"path": str(item.path), "reason": skip_reason(exc, item.path)})
                    warn(f"skipped {item.path}: {skipped[-1]['reason']}")
                    bar.update(1)
                    continue
                used += 1
                maker.counts["frames_decoded"] += 1
                maker.frames(item, image_batch(image, item), budget)
                bar.update(1)
                continue
            used += 1
            batches = sampled_batches(item, every, batch_size, maker.counts, bar)
            try:
                for batch in batches:
                    kept = maker.frames(item, batch, budget)
                    budget = None if budget is None else budget - kept
                    if budget == 0:
                        break
            except InputError as exc:
                reason = f"{skip_reason(exc, item.path)}; the crops cut before that are kept"
                skipped.append({"path": str(item.path), "reason": reason})
                warn(f"skipped {item.path}: {reason}")
            finally:
                batches.close()  # closes the container when we stopped early
    finally:
        bar.close()
        maker.index.write()
    return {
        "inputs": len(media),
        "inputs_used": used,
        **maker.counts,
        "skipped": skipped,
        "out_dir": str(out),
        "index": str(maker.index.path),
        "seconds": round(time.perf_counter() - started, 3),
    }


def summary_line(summary: dict) -> str:
    """One line: inputs, frames, faces kept (new / already there), too small, time, output folder."""
    return (
        f"{PROG}: {summary['inputs_used']} of {summary['inputs']} files used "
        f"({len(summary['skipped'])} skipped), "
        f"{summary['frames_read']} frames read, {summary['faces_kept']} faces kept "
        f"({summary['crops_written']} new, {summary['crops_existing']} already there), "
        f"{summary['faces_too_small']} too small, {summary['seconds']:.1f} s -> {summary['index']}"
    )


def main(argv: list[str]) -> int:
    """``prepare-faces INPUT... --out DIR [--size 256] [--every 5] [--max-per-input N] [--min-face 64]
    [--config FILE] [--quiet] [key=value ...]``. Exit 0 when done, 2 on unusable input or config."""
    parser = argparse.ArgumentParser(
        prog=f"python -m pipeline {PROG}",
        description="cut aligned face crops (FaceShifter training data) out of photos and videos",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, videos or folders of them")
    parser.add_argument("--out", required=True, help="folder for the PNG crops and index.jsonl")
    parser.add_argument("--size", type=int, default=256, help="crop side in px (default 256)")
    parser.add_argument(
        "--template",
        choices=("ghost", "ffhq"),
        default="ghost",
        help="ghost: GHOST's crop (FaceShifter, WSC-swap; default) | ffhq: FFHQ's (the latent swap)",
    )
    parser.add_argument("--every", type=int, default=5, help="use every N-th video frame (default 5)")
    parser.add_argument("--max-per-input", type=int, default=None, help="at most N crops from one file")
    parser.add_argument("--min-face", type=int, default=64, help="smallest face box side kept, px (64)")
    parser.add_argument("--config", help="YAML config merged over configs/default.yaml")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_intermixed_args(argv)
    overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
    inputs = [a for a in args.inputs if a not in overrides]

    from pipeline.cli import guarded
    from pipeline.config import load_config

    def prepare() -> str:
        if not inputs:
            raise InputError("give at least one INPUT (photo, video or folder)")
        if (
            args.size < 16
            or args.every < 1
            or args.min_face < 1
            or (args.max_per_input is not None and args.max_per_input < 1)
        ):
            raise InputError("need --size >= 16 and --every, --min-face, --max-per-input >= 1")
        if not any(Path(p).exists() for p in inputs):
            raise InputError(f"no such file or folder: {', '.join(inputs)}")
        cfg = load_config(args.config, overrides)
        summary = prepare_faces(
            inputs,
            args.out,
            cfg,
            size=args.size,
            every=args.every,
            max_per_input=args.max_per_input,
            min_face=args.min_face,
            progress=not args.quiet,
            template=args.template,
        )
        return summary_line(summary)

    return guarded(prepare, "crops written so far are indexed", debug=args.debug, prog=PROG)
