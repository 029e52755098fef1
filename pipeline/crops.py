"""``python -m pipeline crops``: the aligned crops the configured swap backend receives, as PNGs.

    python -m pipeline crops --input PHOTO_OR_VIDEO --out DIR [--config FILE] [--overwrite] [key=value ...]

The input runs through the pipeline's own stages up to the align stage (detect, landmarks, track, smooth,
align; a photo is a one-frame video), with the same config a swap would use, so the crops are what the
swap stage would be given. ``DIR/crops.jsonl`` has one row per face: ``frame``, ``track``, ``points5``
(frame pixels, the 5 points the alignment used), ``affine`` (2x3, frame -> crop pixels), ``crop`` (the
PNG's name relative to DIR), ``template`` (``align.template``) and, for ``ghost``, ``pose`` (the chosen
pose template, 0 left profile .. 4 right profile). For a photo with ``swap.backend=faceshifter`` each row
also names ``arcface_crop``: the 112 px ArcFace input the face would give as the source (GHOST's 224 crop
halved), rounded to 8 bits for viewing.

Files are written under temporary names and renamed when complete; ``crops.jsonl`` comes last. A DIR
that already holds a ``crops.jsonl`` is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from models.errors import InputError

INDEX_NAME = "crops.jsonl"
CROP_STAGES = ("detect", "landmarks", "track", "smooth", "align")


def _rounded(a: np.ndarray, digits: int = 4) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def crop_rows(input_path: Path, out_dir: Path, cfg: dict) -> list[dict]:
    """Write the crops of ``input_path`` into ``out_dir`` and return the index rows (not yet written)."""
    from models.files import write_png
    from pipeline.executors import LocalExecutor
    from pipeline.run import IMAGE_EXTS, build_specs, load_image
    from stages.decode import probe, read_batches
    from stages.geometry import ghost_alignment
    from stages.types import FrameBatch

    template = cfg["align"]["template"]
    is_photo = input_path.suffix.lower() in IMAGE_EXTS
    if is_photo:
        image = load_image(input_path)
        zero = np.zeros(1, np.int64)
        batches = iter([FrameBatch(str(input_path), zero, zero, image[None])])
    else:
        probe(input_path)  # a file that is not a video stops here, with its one-line reason
        batches = read_batches(input_path, int(cfg["batch_size"]), video_id=str(input_path))
    arcface_for_photo = is_photo and cfg["swap"]["backend"] == "faceshifter"
    specs = [s for s in build_specs(cfg, None) if s.name in CROP_STAGES]
    rows: list[dict] = []

    def sink(batch: FrameBatch) -> None:
        for frame_index, frame, faces in zip(batch.indices, batch.frames, batch.faces):
            for face in faces:
                if not face.selected or face.crop is None:
                    continue
                name = f"frame{int(frame_index):06d}_track{face.track_id}.png"
                write_png(out_dir / name, face.crop)
                row = {
                    "frame": int(frame_index),
                    "track": int(face.track_id),
                    "points5": _rounded(face.points5),
                    "affine": _rounded(face.affine, 6),
                    "crop": name,
                    "template": template,
                }
                if template == "ghost":
                    row["pose"] = int(ghost_alignment(face.points5)[1])
                if arcface_for_photo:
                    row["arcface_crop"] = _arcface_png(frame, face.points5, out_dir, name)
                rows.append(row)

    executor = LocalExecutor(specs)
    try:
        executor.run(batches, sink)
    finally:
        executor.close()
    return rows


def _arcface_png(image: np.ndarray, points5: np.ndarray, out_dir: Path, crop_name: str) -> str:
    """Write the face's GHOST ArcFace input (``(1, 3, 112, 112)`` in [-1, 1]) as an 8-bit PNG; its name."""
    from models.files import write_png
    from stages.swap_faceshifter import ghost_identity_input

    x = ghost_identity_input(image, points5)[0].permute(1, 2, 0).numpy()
    name = crop_name.replace(".png", "_arcface112.png")
    write_png(out_dir / name, np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8))
    return name


def write_crops(input_path: str | Path, out_dir: str | Path, cfg: dict, overwrite: bool = False) -> int:
    """Crops of ``input_path`` into ``out_dir`` with ``crops.jsonl`` last; returns the number of crops."""
    from models.files import write_bytes_atomic

    input_path, out_dir = Path(input_path), Path(out_dir)
    if input_path.is_dir():
        raise InputError(f"{input_path}: is a folder; give one photo or video")
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such file")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    index = out_dir / INDEX_NAME
    if index.exists() and not overwrite:
        raise InputError(f"{index} exists: choose another --out, or pass --overwrite to replace those crops")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        rows = crop_rows(input_path, out_dir, cfg)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a bad input leaves no empty folder behind
        raise
    text = "".join(json.dumps(row) + "\n" for row in rows)
    write_bytes_atomic(index, text.encode("utf-8"))
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline crops",
        description="write the aligned crops the configured swap backend receives (PNGs + crops.jsonl)",
    )
    parser.add_argument("--input", required=True, help="photo or video (never modified)")
    parser.add_argument("--out", required=True, help="folder for the PNGs and crops.jsonl")
    parser.add_argument("--config", help="YAML config merged over configs/default.yaml")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's crops in --out")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)

    def crops() -> str:
        from pipeline.config import load_config

        cfg = load_config(args.config, args.overrides)
        count = write_crops(args.input, args.out, cfg, args.overwrite)
        index = Path(args.out) / INDEX_NAME
        return f"swapstream: {count} crops ({cfg['align']['template']} template) -> {index}"

    from pipeline.cli import guarded

    return guarded(crops, "crops.jsonl not written", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
