"""Face-crop dataset maker for FaceShifter training: aligned ``size``² RGB crops of every usable face.

``prepare-faces INPUT... --out DIR``: photos, videos or folders of them in; PNG crops and ``index.jsonl`` out.
Each face is cut as the ``aei_net`` registry entry's template says (``ghost``: GHOST's crop, the best of five
pose templates at 224 px from its 5 MTCNN points, resized to ``size``; :func:`stages.align.alignment`), so
a generator trained on these crops sees at run time the crop ``configs/faceshifter.yaml`` gives it.
Names are deterministic, so a second run into the same folder only adds what is missing.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import InputError, first_line
from models.files import write_atomic, write_png
from stages.types import FaceRecord, FrameBatch

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm"})
INDEX_NAME = "index.jsonl"
PROG = "prepare-faces"

# The index is rewritten (atomically) after this many new lines or seconds, and always at the end.
_FLUSH_LINES = 500
_FLUSH_SECONDS = 10.0


@dataclass(frozen=True)
class MediaFile:
    """One image or video to read. kind: ``image`` | ``video``; path: resolved."""

    path: Path
    kind: str

    @property
    def tag(self) -> str:
        """``<stem>_<8 hex>``: the file's stem and a hash of its resolved path (unique per file)."""
        digest = hashlib.sha256(str(self.path).encode("utf-8")).hexdigest()[:8]
        return f"{self.path.stem}_{digest}"


def crop_name(media: MediaFile, frame: int, k: int) -> str:
    """``<stem>_<8 hex>_f<frame:06d>_<k>.png``; k counts the kept faces of that frame, largest first."""
    return f"{media.tag}_f{frame:06d}_{k}.png"


def _kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTS:
        return "image"
    if suffix in VIDEO_EXTS:
        return "video"
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def collect_inputs(inputs: list[str | Path], out_dir: Path) -> tuple[list[MediaFile], list[dict[str, str]]]:
    """Expand files and folders (recursively, sorted, hidden entries and ``out_dir`` left out) into media.

    Returns (media files, deduplicated by resolved path; skipped ``{"path", "reason"}``). A file named
    directly with an unknown extension is tried as an image (then as a video when that fails).
    """
    media: list[MediaFile] = []
    skipped: list[dict[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, kind: str) -> None:
        if path not in seen:
            seen.add(path)
            media.append(MediaFile(path, kind))

    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            root = p.resolve()
            if _inside(root, out_dir):
                skipped.append({"path": str(p), "reason": "is (inside) the output folder"})
                continue
            found = 0
            for dirpath, dirnames, filenames in os.walk(root):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d for d in dirnames if not d.startswith(".") and not _inside(here / d, out_dir)
                )
                for name in sorted(filenames):
                    kind = _kind_of(here / name)
                    if kind is None or name.startswith("."):
                        continue
                    found += 1
                    add((here / name).resolve(), kind)
            if not found:
                skipped.append({"path": str(p), "reason": "folder holds no images or videos"})
        elif p.is_file():
            add(p.resolve(), _kind_of(p) or "unknown")
        else:
            skipped.append({"path": str(p), "reason": "no such file or folder"})
    return media, skipped


class CropIndex:
    """``out_dir/index.jsonl``: one JSON object per crop, keyed by ``file``; rewritten atomically.

    Lines of an earlier run are kept in their order while their crop file still exists; new lines are
    appended. Unparsable lines are dropped (with a warning).
    """

    def __init__(self, out_dir: Path, warn) -> None:
        self.path = out_dir / INDEX_NAME
        self.entries: dict[str, dict] = {}
        self.pending = 0
        self.last_flush = time.monotonic()
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                        name = entry["file"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        warn(f"{self.path}: line {number} is not an index entry; dropping it")
                        continue
                    if (out_dir / name).is_file():
                        self.entries[name] = entry

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def add(self, entry: dict) -> None:
        self.entries[entry["file"]] = entry
        self.pending += 1
        if self.pending >= _FLUSH_LINES or time.monotonic() - self.last_flush > _FLUSH_SECONDS:
            self.write()

    def write(self) -> None:
        """Write all entries to a temporary file beside the index, then rename it over the index."""

        def lines(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                for entry in self.entries.values():
                    f.write(json.dumps(entry, separators=(",", ":")) + "\n")
                f.flush()
                os.fsync(f.fileno())

        write_atomic(self.path, lines)
        self.pending = 0
        self.last_flush = time.monotonic()


def _looks_like_image(path: Path) -> bool:
    """Whether Pillow recognises the file's header (for inputs named without a known extension)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _reason(exc: BaseException, path: Path) -> str:
    """The error's message without the leading ``<path>: `` our InputErrors start with."""
    text = first_line(str(exc))
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


class _Maker:
    """Detects, filters, aligns and writes; keeps the counts of one ``prepare_faces`` call."""

    def __init__(self, cfg: dict, out_dir: Path, size: int, min_face: int, warn) -> None:
        from models.weights import REGISTRY
        from stages.detect import DetectStage

        det_cfg = copy.deepcopy(cfg)
        # Faces below min_face are dropped anyway: a coarser pyramid start saves most of P-Net's work.
        # 0.8 keeps a margin, as MTCNN's boxes can come out a little smaller than its min_face_size.
        det_cfg["detect"]["min_face_size"] = max(float(cfg["detect"]["min_face_size"]), 0.8 * min_face)
        self.detector = DetectStage(det_cfg)
        entry = REGISTRY["aei_net"]
        self.align = {
            "crop_size": size,
            "template": entry.template,
            "face_scale": entry.face_scale,
            "centre_y": 0.5,
        }
        self.out_dir, self.size, self.min_face = out_dir, size, min_face
        self.index = CropIndex(out_dir, warn)
        sizes = {e.get("size") for e in self.index.entries.values()} - {size}
        if sizes:
            raise InputError(
                f"{out_dir} holds crops of another size ({', '.join(map(str, sorted(sizes, key=str)))} px): "
                f"use another --out or --size {next(iter(sizes))}"
            )
        self.bar = None
        self.counts = {
            "frames_decoded": 0,
            "frames_read": 0,
            "faces_kept": 0,
            "crops_written": 0,
            "crops_existing": 0,
            "faces_too_small": 0,
        }

    def keep(self, faces: list[FaceRecord]) -> list[FaceRecord]:
        """Faces whose box is at least ``min_face`` px on its shorter side (counts the others)."""
        kept = []
        for face in faces:
            x1, y1, x2, y2 = (float(v) for v in face.box)
            if min(x2 - x1, y2 - y1) >= self.min_face:
                kept.append(face)
            else:
                self.counts["faces_too_small"] += 1
        return kept

    def frames(self, media: MediaFile, batch: FrameBatch, budget: int | None) -> int:
        """Detect, align and write the faces of ``batch`` (frames ``(N, H, W, 3) uint8`` RGB).

        Stops once ``budget`` faces were kept (None: no limit). Returns the number of faces kept.
        """
        from stages.align import alignment, crop_faces

        self.detector(batch)
        self.counts["frames_read"] += len(batch)
        owners, matrices, warps, names, faces = [], [], [], [], []
        for i, frame_faces in enumerate(batch.faces):
            for k, face in enumerate(self.keep(frame_faces)):
                if budget is not None and len(names) >= budget:
                    break
                owners.append(i)
                affine, warp = alignment(face.points5, self.align)
                matrices.append(affine)
                warps.append(warp)
                names.append(crop_name(media, int(batch.indices[i]), k))
                faces.append(face)
        todo = [j for j, name in enumerate(names) if not (self.out_dir / name).is_file()]
        crops = crop_faces(batch.frames, [owners[j] for j in todo], [warps[j] for j in todo], self.align)
        for j, crop in zip(todo, crops):
            write_png(self.out_dir / names[j], crop)
        self.counts["crops_written"] += len(todo)
        self.counts["crops_existing"] += len(names) - len(todo)
        self.counts["faces_kept"] += len(names)
        for j, name in enumerate(names):
            if name not in self.index:
                self.index.add(self._entry(name, media, int(batch.indices[owners[j]]), faces[j], matrices[j]))
        if self.bar is not None:
            self.bar.set_postfix(faces=self.counts["faces_kept"], refresh=False)
        return len(names)

    def _entry(self, name: str, media: MediaFile, frame: int, face: FaceRecord, affine: np.ndarray) -> dict:
        return {
            "file": name,
            "source": str(media.path),
            "frame": frame,
            "box": [round(float(v), 2) for v in face.box],
            "score": round(float(face.score), 5),
            "points5": [[round(float(x), 2), round(float(y), 2)] for x, y in face.points5],
            "affine": [[round(float(v), 6) for v in row] for row in affine],
            "size": self.size,
        }


def _image_batch(image: np.ndarray, media: MediaFile) -> FrameBatch:
    return FrameBatch(
        video_id=str(media.path),
        indices=np.zeros(1, np.int64),
        pts=np.zeros(1, np.int64),
        frames=image[None],
    )


def _sampled(media: MediaFile, every: int, batch_size: int, counts: dict, bar) -> Iterator[FrameBatch]:
    """Every ``every``-th frame of a video, streamed, regrouped into batches of up to ``batch_size``.

    Raises InputError naming the file when decoding breaks off part-way.
    """
    import av

    from stages.decode import read_batches

    frames: list[np.ndarray] = []
    indices: list[int] = []
    decoded = read_batches(media.path, batch_size, video_id=str(media.path))
    while True:
        try:
            batch = next(decoded, None)
        except (av.FFmpegError, OSError) as exc:
            decoded.close()
            raise InputError(
                f"{media.path}: decoding failed after frame {counts['frames_decoded']} ({exc})"
            ) from None
        if batch is None:
            break
        counts["frames_decoded"] += len(batch)
        bar.update(len(batch))
        for i, index in enumerate(batch.indices):
            if index % every == 0:
                frames.append(batch.frames[i].copy())  # a copy: do not keep the whole decoded batch alive
                indices.append(int(index))
        if len(frames) >= batch_size:
            yield _sampled_batch(media, indices, frames)
            frames, indices = [], []
    if frames:
        yield _sampled_batch(media, indices, frames)


def _sampled_batch(media: MediaFile, indices: list[int], frames: list[np.ndarray]) -> FrameBatch:
    # FrameBatch documents consecutive indices; these are every-th frames, which no stage here relies on.
    return FrameBatch(
        video_id=str(media.path),
        indices=np.asarray(indices, np.int64),
        pts=np.asarray(indices, np.int64),
        frames=np.stack(frames),
    )


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
) -> dict:
    """Cut aligned ``size``² face crops out of photos, videos and folders of them into ``out_dir``.

    inputs: image files (.jpg .jpeg .png .bmp .webp), video files (.mp4 .mov .mkv .avi .webm) or folders
    searched recursively for both. Videos are streamed; every ``every``-th frame (0, every, 2·every, ...)
    is searched for faces. Faces whose MTCNN box is under ``min_face`` px on its shorter side are dropped;
    at most ``max_per_input`` crops come from one file (None: all). Crops are ``(size, size, 3) uint8`` RGB
    PNGs named ``<stem>_<8 hex>_f<frame:06d>_<k>.png`` (photos are frame 0); ``out_dir/index.jsonl`` holds
    one line per crop (file, source, frame, box, score, points5, affine frame → crop, size).

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
        if item.kind == "unknown" and _looks_like_image(item.path):
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
                skipped.append({"path": str(item.path), "reason": _reason(exc, item.path)})
            warn(f"skipped {item.path}: {skipped[-1]['reason']}")
            continue
        usable.append(MediaFile(item.path, "video"))
        total += info.frames

    batch_size = int(cfg["batch_size"])
    maker = _Maker(cfg, out, size, min_face, warn)
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
                    skipped.append({"path": str(item.path), "reason": _reason(exc, item.path)})
                    warn(f"skipped {item.path}: {skipped[-1]['reason']}")
                    bar.update(1)
                    continue
                used += 1
                maker.counts["frames_decoded"] += 1
                maker.frames(item, _image_batch(image, item), budget)
                bar.update(1)
                continue
            used += 1
            batches = _sampled(item, every, batch_size, maker.counts, bar)
            try:
                for batch in batches:
                    kept = maker.frames(item, batch, budget)
                    budget = None if budget is None else budget - kept
                    if budget == 0:
                        break
            except InputError as exc:
                reason = f"{_reason(exc, item.path)}; the crops cut before that are kept"
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
        )
        return summary_line(summary)

    return guarded(prepare, "crops written so far are indexed", debug=args.debug, prog=PROG)
