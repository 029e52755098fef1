"""FaceForensics++ layout and pairing: originals folder, split files, TTT_SSS names, frame picks, decord."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from models.errors import InputError, reason

ORIGINALS = Path("original_sequences") / "youtube"
VIDEO_ID = re.compile(r"^\d{3,}$")
VIDEO_NAME = re.compile(r"^(\d{3,})_(\d{3,})$")


# ----------------------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the benchmark's inputs are: the originals folder and the split file."""

    root: Path
    compression: str
    split: str
    originals: Path
    split_file: Path

    def original(self, video_id: str) -> Path:
        return self.originals / f"{video_id}.mp4"


def find_layout(root: str | Path, compression: str, split: str, splits_dir: str = "") -> Layout:
    """Check the FF++ tree under ``root``; InputError (one line, naming the path) when a part is missing."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: FaceForensics++ root folder not found")
    originals = root / ORIGINALS / compression / "videos"
    if not originals.is_dir() and compression == "c0" and (root / ORIGINALS / "raw" / "videos").is_dir():
        originals = root / ORIGINALS / "raw" / "videos"  # FF++'s download script names c0 "raw"
    if not originals.is_dir():
        present = sorted(p.parent.name for p in (root / ORIGINALS).glob("*/videos") if p.is_dir())
        hint = f" (present: {', '.join(present)})" if present else ""
        raise InputError(
            f"{originals}: folder of original videos not found: check ROOT and COMPRESSION{hint}"
        )
    split_file = (Path(splits_dir) if splits_dir else root / "splits") / f"{split}.json"
    if not split_file.is_file():
        raise InputError(
            f"{split_file}: split file not found: put FF++'s splits/{split}.json there "
            "(or set ffpp.splits_dir)"
        )
    return Layout(root, compression, split, originals, split_file)


def read_split(path: str | Path) -> list[tuple[str, str]]:
    """An FF++ split file: a JSON list of ``[id, id]`` pairs of video ids (``"953"``) → list of tuples."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON split file ({exc})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: a split file is a JSON list of [id, id] pairs")
    pairs = []
    for i, item in enumerate(data):
        ok = isinstance(item, list) and len(item) == 2
        ids = [str(x) for x in item] if ok else []
        if not ok or not all(VIDEO_ID.match(x) for x in ids) or ids[0] == ids[1]:
            raise InputError(
                f"{path}: entry {i} is {item!r}, not a pair of two different video ids like ['000', '003']"
            )
        pairs.append((ids[0], ids[1]))
    return pairs


def video_pairs(split_pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(target, source) of every video: both directions of each split pair, in file order, no repeats."""
    seen: dict[tuple[str, str], None] = {}
    for a, b in split_pairs:
        seen.setdefault((a, b))
        seen.setdefault((b, a))
    return list(seen)


def split_ids(split_pairs: list[tuple[str, str]]) -> list[str]:
    """Every video id of the split, in order of first appearance."""
    return list(dict.fromkeys(x for pair in split_pairs for x in pair))


def video_name(target: str, source: str) -> str:
    """FF++'s name of a swapped video: ``TTT_SSS``."""
    return f"{target}_{source}"


def parse_video_name(name: str) -> tuple[str, str] | None:
    """``"000_003"`` (or ``"000_003.mp4"``) → (target, source); None when not of that form."""
    m = VIDEO_NAME.match(Path(name).stem if name.endswith(".mp4") else name)
    return (m.group(1), m.group(2)) if m else None


def frame_indices(n: int, k: int) -> list[int]:
    """``k`` frame indices evenly spaced over ``n`` frames, first and last included (all when n <= k)."""
    if n <= 0:
        return []
    if k <= 1:
        return [(n - 1) // 2]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def score_only_folder(folder: str | Path, layout: Layout) -> tuple[Path, str]:
    """Resolve ``--score-only DIR`` (as given, else under ROOT; a ``<compression>/videos`` inside it is used)
    to (folder of TTT_SSS.mp4 videos, method name = the folder's own name)."""
    given = Path(folder)
    path = given if given.is_dir() or given.is_absolute() else layout.root / given
    if not path.is_dir():
        raise InputError(
            f"{folder}: folder of swapped videos not found (looked as given and under {layout.root})"
        )
    if (path / layout.compression / "videos").is_dir():
        path = path / layout.compression / "videos"
    if not any(parse_video_name(p.name) for p in path.glob("*.mp4")):
        raise InputError(f"{path}: no swapped videos named like TTT_SSS.mp4 (FF++'s naming) in this folder")
    name_from = path.resolve()
    while name_from.name in ("videos", layout.compression) and name_from.parent != name_from:
        name_from = name_from.parent
    return path, name_from.name or "score-only"


# ----------------------------------------------------------------------------------------- video access


def open_video(path: str | Path):
    """A decord VideoReader (CPU) on ``path``; InputError (one line) when missing or unreadable."""
    import decord

    from stages.decode import probe

    probe(path)  # clean one-line errors for missing, empty and non-video files
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except (RuntimeError, decord.DECORDError) as exc:
        raise InputError(f"{path}: not a readable video ({reason(exc)})") from None
    if len(reader) == 0:
        raise InputError(f"{path}: video has no frames")
    return reader


def read_frames(reader, path: str | Path, indices: list[int]) -> np.ndarray:
    """Frames at ``indices`` by random access: ``(K, H, W, 3) uint8`` RGB (display orientation)."""
    import decord

    try:
        return reader.get_batch(list(indices)).asnumpy()
    except (RuntimeError, decord.DECORDError) as exc:
        raise InputError(f"{path}: frames {indices} cannot be decoded ({reason(exc)})") from None
