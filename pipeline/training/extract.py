"""Crop extraction for prepare-faces: finds photos and videos, detects, filters, aligns and writes faces.

Each face is cut as the ``aei_net`` registry entry's template says (``ghost``: GHOST's crop, the best of five
pose templates at 224 px from its 5 MTCNN points, resized to ``size``; :func:`stages.align.alignment`), so
a generator trained on these crops sees at run time the crop ``configs/faceshifter.yaml`` gives it; or, with
``template="ffhq"``, FFHQ's crop (what StyleGAN2's FFHQ generator draws: the latent swap's training crops).
A folder holds crops of one size and one template.
Crop names are deterministic (:func:`crop_name`) and ``index.jsonl`` (:class:`CropIndex`) holds one line
per crop. The command around it: :mod:`pipeline.training.prepare_faces`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import InputError, first_line
from models.files import write_atomic, write_png
from pipeline.run import IMAGE_EXTS
from stages.types import FaceRecord, FrameBatch

VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm"})
INDEX_NAME = "index.jsonl"

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


def looks_like_image(path: Path) -> bool:
    """Whether Pillow recognises the file's header (for inputs named without a known extension)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def skip_reason(exc: BaseException, path: Path) -> str:
    """The error's message without the leading ``<path>: `` our InputErrors start with."""
    text = first_line(str(exc))
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


class CropMaker:
    """Detects, filters, aligns and writes; keeps the counts of one ``prepare_faces`` call."""

    def __init__(
        self, cfg: dict, out_dir: Path, size: int, min_face: int, warn, template: str | None = None
    ) -> None:
        from models.weights import REGISTRY
        from stages.detect import DetectStage

        det_cfg = copy.deepcopy(cfg)
        # Faces below min_face are dropped anyway: a coarser pyramid start saves most of P-Net's work.
        # 0.8 keeps a margin, as MTCNN's boxes can come out a little smaller than its min_face_size.
        det_cfg["detect"]["min_face_size"] = max(float(cfg["detect"]["min_face_size"]), 0.8 * min_face)
        # MTCNN on every frame read: they are every n-th frame of a video or separate photos, not the
        # consecutive frames the keyframe carry needs, and training crops want detected points
        det_cfg["detect"]["every"] = 1
        self.detector = DetectStage(det_cfg)
        entry = REGISTRY["aei_net"]
        self.template = template or entry.template
        self.align = {
            "crop_size": size,
            "template": self.template,
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
        # index lines from before templates were recorded are GHOST crops
        templates = {e.get("template", "ghost") for e in self.index.entries.values()} - {self.template}
        if templates:
            raise InputError(
                f"{out_dir} holds crops of another template ({', '.join(sorted(templates))}): "
                f"use another --out or --template {next(iter(templates))}"
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
            "template": self.template,
        }


def image_batch(image: np.ndarray, media: MediaFile) -> FrameBatch:
    return FrameBatch(
        video_id=str(media.path),
        indices=np.zeros(1, np.int64),
        pts=np.zeros(1, np.int64),
        frames=image[None],
    )


def sampled_batches(media: MediaFile, every: int, batch_size: int, counts: dict, bar) -> Iterator[FrameBatch]:
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
