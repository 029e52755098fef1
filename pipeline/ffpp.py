"""FaceForensics++ benchmark: swap each target of a split with its paired source; score on fixed networks.

python -m pipeline ffpp --root ROOT --out OUT [--compression c23] [--split test] [--limit N]
                        [--score-only DIR] [--config FILE] [--quiet] [key=value ...]

The fixed rules (each written into results.json with the values used; settings under ``ffpp:`` in the config):

- Layout, as FF++ distributes it: ``ROOT/original_sequences/youtube/<compression>/videos/NNN.mp4`` (``c0`` may
  be named ``raw``), ``ROOT/manipulated_sequences/<Method>/<compression>/videos/TTT_SSS.mp4`` and the official
  split files ``ROOT/splits/{train,val,test}.json`` (a JSON list of ``["NNN", "MMM"]`` id pairs;
  ``ffpp.splits_dir`` points elsewhere).
- Pairing, FF++'s own naming: ``TTT_SSS`` is target video TTT with the face of source video SSS. A split pair
  ``[a, b]`` gives both ``a_b`` and ``b_a``, in the order of the file; ``--limit N`` keeps the first N.
- Source identity (one per video of the split): frames 0, s, 2s, ... below ``source_frames`` (s =
  ``source_stride``) are read by random access (decord); the largest dlib HOG face of each is a candidate,
  frontal when |yaw| <= ``frontal_yaw`` degrees (``cv2.solvePnP`` on its 68 landmarks,
  :func:`pipeline.evaluate.head_pose`). The identity frame is the frontal candidate with the largest box
  (ties: the earliest frame), else the largest candidate of any yaw. Its box, grown by ``source_margin`` of
  its size on each side, is written as ``OUT/sources/SSS.png``: the source photo of every swap with source
  SSS and SSS's entry in the retrieval gallery. A video with no HOG face in those frames has no identity.
- Scoring, per video: ``frames_per_video`` frames evenly spaced over the video (``round(i (n-1) / (K-1))``),
  read by random access (decord) from the original target and the swapped video. In each frame the
  original's largest HOG face and the swapped face overlapping it (IoU >= ``pipeline.evaluate.MATCH_IOU``)
  give: ID retrieval top-1 (the nearest of all the split's identities is SSS), pose error (mean |difference|
  of yaw, pitch and roll, degrees) and expression error. These are measured with the evaluator's networks
  (:class:`pipeline.evaluate.FaceScorer`, chosen by ``evaluate.*`` in the config, named in results.json's
  ``evaluator``): by default dlib's 128-d descriptor (Euclidean), PnP on 6 dlib landmarks and Procrustes-
  aligned landmarks (inter-ocular distances); with user checkpoints, ArcFace (cosine), Hopenet and
  Deep3DFaceRecon expression coefficients, the kinds of network the FaceShifter paper scores FF++ with
  (a face recogniser, Hopenet, a 3D face model). Flicker and integrity (frames,
  timestamps, audio, background) come from :func:`pipeline.evaluate.evaluate` over the whole video
  (every ``flicker_every``-th frame).
- Totals per method: ID retrieval % and the pose and expression means pooled over the scored frames;
  flicker the mean over videos; wall time the sum of each video's swap and scoring seconds.

Swaps run through :func:`pipeline.batch.run_jobs` (``OUT/records.jsonl``: an interrupted run resumes, a
finished video is not redone); scores are kept in ``OUT/scores.jsonl`` under a hash of everything they depend
on. ``--score-only DIR`` scores an existing folder of ``TTT_SSS.mp4`` videos (e.g. FF++'s own
``manipulated_sequences/FaceShifter``) with the same networks; its method name is the folder's name.
Outputs (written atomically): ``results.json`` (per video and totals of every method run into OUT, with
config, package versions, identity frames and scored frame indices), ``results.md`` (one row per method) and
``contact_sheet.png`` (target | source | each method, for a few videos). A missing split file, originals
folder or root stops with one line (exit 2); a missing or corrupt video is reported in the results, skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import platform
import re
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import pipeline
from models.errors import InputError, one_line, reason
from models.files import png_bytes, sha256_remembered, write_bytes_atomic, write_json_atomic
from pipeline.evaluate import fmt

if TYPE_CHECKING:
    from pipeline.evaluate import FaceScorer

ORIGINALS = Path("original_sequences") / "youtube"
VIDEO_ID = re.compile(r"^\d{3,}$")
VIDEO_NAME = re.compile(r"^(\d{3,})_(\d{3,})$")
RULE_KEYS = ("frames_per_video", "source_frames", "source_stride", "frontal_yaw", "source_margin", "upsample")
SCORE_KEYS = (*RULE_KEYS, "flicker_every")
RULES = {
    "pairing": "TTT_SSS = target video TTT with the face of source video SSS; each split pair [a, b] gives "
    "a_b and b_a, in file order; --limit N keeps the first N",
    "source_identity": "among frames 0, source_stride, ... < source_frames of the source video (decord), the "
    "largest dlib HOG face of each frame; frontal when |yaw| <= frontal_yaw (solvePnP on its 68 landmarks); "
    "the frontal one with the largest box (ties: earliest), else the largest of any yaw; its box grown by "
    "source_margin on each side is the source photo and the identity's gallery entry",
    "frames": "frames_per_video frames at round(i (n-1) / (K-1)), n = the shorter video's frame count, read "
    "by random access (decord) from the original target and the swapped video",
    "face": "the original frame's largest dlib HOG face; the swapped frame's face overlapping it most "
    "(IoU >= 0.3); frames without either are counted, not scored",
    "id_retrieval": "top-1: the nearest of the split's identities is SSS, by the evaluator's identity "
    "distance (see evaluator.identity)",
    "pose": "mean |difference| of yaw, pitch, roll (degrees; evaluator.pose)",
    "expression": "the evaluator's expression error of the swapped face from the original's (evaluator."
    "expression: landmarks in inter-ocular distances, or 3DMM expression coefficients)",
    "flicker_integrity": "pipeline.evaluate.evaluate over the whole video, every flicker_every-th frame",
    "totals": "ID retrieval %, pose and expression pooled over scored frames; flicker the mean over videos; "
    "wall time the sum of each video's swap and scoring seconds",
}
TILE = 192  # px, side of one contact sheet tile
CONTACT_LABEL_H = 24  # px, height of the contact sheet's label row


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


# ----------------------------------------------------------------------------------------- identities


@dataclasses.dataclass
class Identity:
    """The source identity of one video: the frame picked by the rule (module doc) and its photo."""

    id: str
    video: str
    video_sha256: str | None = None
    frames_looked_at: list[int] = dataclasses.field(default_factory=list)
    frame: int | None = None
    box: list[float] | None = None  # x1, y1, x2, y2 px in the frame
    yaw: float | None = None  # degrees; None when PnP failed
    frontal: bool = False
    photo: str | None = None  # path relative to OUT
    photo_sha256: str | None = None
    rule: dict = dataclasses.field(default_factory=dict)
    error: str | None = None


def pick_identity_frame(
    frames: np.ndarray, indices: list[int], max_yaw: float, upsample: int
) -> tuple[int, Any, float | None, bool] | None:
    """Apply the source-identity rule to ``frames (K, H, W, 3) uint8`` RGB at ``indices``.

    Returns (position in ``frames``, the dlib face, its yaw in degrees or None, frontal) or None (no face).
    """
    from pipeline.evaluate import detect_faces, head_pose

    h, w = frames.shape[1:3]
    candidates = []
    for pos in range(len(indices)):
        faces = detect_faces(frames[pos], upsample)
        if not faces:
            continue
        face = faces[0]
        pose = head_pose(face.landmarks, w, h)
        yaw = None if pose is None else float(pose[0])
        frontal = yaw is not None and abs(yaw) <= max_yaw
        x1, y1, x2, y2 = face.box
        candidates.append((frontal, float((x2 - x1) * (y2 - y1)), -pos, pos, face, yaw))
    if not candidates:
        return None
    frontal, _, _, pos, face, yaw = max(candidates, key=lambda c: c[:3])
    return pos, face, yaw, frontal


def crop_face(image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """``image (H, W, 3)`` cut to ``box (4,)`` x1, y1, x2, y2 grown by ``margin`` × its size on each side."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    gx, gy = margin * (x2 - x1), margin * (y2 - y1)
    top, bottom = max(0, int(y1 - gy)), min(h, int(np.ceil(y2 + gy)))
    left, right = max(0, int(x1 - gx)), min(w, int(np.ceil(x2 + gx)))
    return np.ascontiguousarray(image[top:bottom, left:right])


def find_identity(video_id: str, layout: Layout, out: Path, ff: dict, cached: dict | None) -> Identity:
    """The identity of one split video (rule in the module doc); its photo under ``out/sources``.

    ``cached``: the entry of an earlier run; reused when the video, the rule and the photo are unchanged.
    Errors (missing or unreadable video, no face) are returned in ``Identity.error``, never raised.
    """
    video = layout.original(video_id)
    rule = {k: ff[k] for k in ("source_frames", "source_stride", "frontal_yaw", "source_margin", "upsample")}
    ident = Identity(video_id, str(video), rule=rule)
    try:
        if not video.is_file():
            raise InputError(f"{video}: no such file")
        ident.video_sha256 = sha256_remembered(video)
        if cached and not cached.get("error") and _reusable(cached, ident, out):
            return Identity(**cached)
        reader = open_video(video)
        stride = max(1, int(ff["source_stride"]))
        indices = list(range(0, min(int(ff["source_frames"]), len(reader)), stride)) or [0]
        ident.frames_looked_at = indices
        frames = read_frames(reader, video, indices)
        del reader
        picked = pick_identity_frame(frames, indices, float(ff["frontal_yaw"]), int(ff["upsample"]))
        if picked is None:
            raise InputError(
                f"{video}: dlib's HOG detector finds no face in frames {indices[0]}-{indices[-1]} "
                "(try ffpp.upsample=1 for faces under 80 px)"
            )
        pos, face, yaw, frontal = picked
        photo = Path("sources") / f"{video_id}.png"
        data = png_bytes(crop_face(frames[pos], face.box, float(ff["source_margin"])))
        write_bytes_atomic(out / photo, data)
        ident.frame, ident.box = indices[pos], [float(v) for v in face.box]
        ident.yaw, ident.frontal = yaw, frontal
        ident.photo, ident.photo_sha256 = photo.as_posix(), hashlib.sha256(data).hexdigest()
    except (InputError, OSError) as exc:
        ident.error = str(exc) if isinstance(exc, InputError) else f"{video}: {reason(exc)}"
    return ident


def _reusable(cached: dict, ident: Identity, out: Path) -> bool:
    photo = out / (cached.get("photo") or "")
    return (
        cached.get("video_sha256") == ident.video_sha256
        and cached.get("rule") == ident.rule
        and set(cached) == {f.name for f in dataclasses.fields(Identity)}
        and photo.is_file()
        and sha256_remembered(photo) == cached.get("photo_sha256")
    )


def gallery_of(identities: dict[str, Identity], out: Path, scorer: FaceScorer) -> tuple[list[str], list]:
    """(ids, identity embeddings) of every identity with a photo, by ``scorer.source_embedding``; an
    identity whose photo fails gets its ``error`` set."""
    ids, rows = [], []
    for vid, ident in identities.items():
        if ident.error:
            continue
        try:
            rows.append(scorer.source_embedding(out / ident.photo))
            ids.append(vid)
        except InputError as exc:
            ident.error = str(exc)
    return ids, rows


# ----------------------------------------------------------------------------------------- scoring


def score_video(
    original: Path,
    swapped: Path,
    source_id: str,
    source_photo: Path,
    gallery_ids: list[str],
    gallery: list,
    cfg: dict,
    scorer: FaceScorer,
) -> dict:
    """Score ``swapped`` against its ``original`` (module doc) with ``scorer``'s networks; ``gallery`` holds
    the embeddings of ``gallery_ids``. Raises InputError for unreadable videos."""
    from pipeline.evaluate import MATCH_IOU, angle_difference, box_iou, detect_faces, evaluate

    ff = cfg["ffpp"]
    upsample = int(ff["upsample"])
    reader_a, reader_b = open_video(original), open_video(swapped)
    n = min(len(reader_a), len(reader_b))
    indices = frame_indices(n, int(ff["frames_per_video"]))
    frames_a = read_frames(reader_a, original, indices)
    frames_b = read_frames(reader_b, swapped, indices)
    del reader_a, reader_b
    if frames_a.shape[1:] != frames_b.shape[1:]:
        raise InputError(
            f"{swapped}: frames are {frames_b.shape[2]}x{frames_b.shape[1]} but {original} has "
            f"{frames_a.shape[2]}x{frames_a.shape[1]}: is it a swap of this original?"
        )
    h, w = frames_a.shape[1:3]
    per_frame: list[dict] = []
    for index, fa, fb in zip(indices, frames_a, frames_b):
        faces_a = detect_faces(fa, upsample)
        if not faces_a:
            per_frame.append({"index": index, "skipped": "no face in original"})
            continue
        face_a = faces_a[0]
        matches = [f for f in detect_faces(fb, upsample) if box_iou(f.box, face_a.box) >= MATCH_IOU]
        if not matches:
            per_frame.append({"index": index, "skipped": "no face in output"})
            continue
        face_b = max(matches, key=lambda f: box_iou(f.box, face_a.box))
        embedding = scorer.embedding(fb, face_b)
        distances = np.array([scorer.distance(embedding, g) for g in gallery])
        nearest = gallery_ids[int(np.argmin(distances))]
        pose_a, pose_b = scorer.pose_angles(fa, face_a, w, h), scorer.pose_angles(fb, face_b, w, h)
        pose = (
            None
            if pose_a is None or pose_b is None
            else float(np.mean([angle_difference(a, b) for a, b in zip(pose_a, pose_b)]))
        )
        source_distance = float(distances[gallery_ids.index(source_id)]) if source_id in gallery_ids else None
        per_frame.append(
            {
                "index": index,
                "retrieved": nearest,
                "correct": nearest == source_id,
                "distance_to_source": source_distance,
                "pose_error_deg": pose,
                scorer.expression_key: scorer.expression_error(fb, face_b, fa, face_a),
            }
        )
    whole = evaluate(
        original, swapped, source_photo, cfg, every=int(ff["flicker_every"]), upsample=upsample, scorer=scorer
    )
    scored = [f for f in per_frame if "retrieved" in f]
    poses = [f["pose_error_deg"] for f in scored if f["pose_error_deg"] is not None]
    return {
        "frame_indices": indices,
        "frames": {
            "video": n,
            "looked_at": len(indices),
            "scored": len(scored),
            "no_face_original": sum(f.get("skipped") == "no face in original" for f in per_frame),
            "no_face_output": sum(f.get("skipped") == "no face in output" for f in per_frame),
            "correct": sum(f["correct"] for f in scored),
        },
        "id_top1": float(np.mean([f["correct"] for f in scored])) if scored else None,
        "pose_error_deg": float(np.mean(poses)) if poses else None,
        scorer.expression_key: (
            float(np.mean([f[scorer.expression_key] for f in scored])) if scored else None
        ),
        "flicker": whole["flicker"],
        "flicker_pairs": whole["flicker_pairs"],
        "jitter_iod": whole["jitter_iod"],
        "integrity": whole["integrity"],
        "per_frame": per_frame,
    }


def totals_of(videos: dict[str, dict], expression_key: str = "expression_error_iod") -> dict:
    """Totals of one method: frame-pooled ID retrieval %, pose and expression (``expression_key``, see
    :attr:`pipeline.evaluate.FaceScorer.expression_key`); flicker mean over videos."""
    ok = [v for v in videos.values() if v.get("status") == "ok"]
    frames = [f for v in ok for f in v["per_frame"] if "retrieved" in f]
    poses = [f["pose_error_deg"] for f in frames if f["pose_error_deg"] is not None]
    flickers = [v["flicker"] for v in ok if v.get("flicker") is not None]
    return {
        "videos": len(ok),
        "errors": sum(v.get("status") != "ok" for v in videos.values()),
        "frames": len(frames),
        "frames_no_face_original": sum(v["frames"]["no_face_original"] for v in ok),
        "frames_no_face_output": sum(v["frames"]["no_face_output"] for v in ok),
        "id_retrieval_pct": 100.0 * float(np.mean([f["correct"] for f in frames])) if frames else None,
        "pose_error_deg": float(np.mean(poses)) if poses else None,
        expression_key: float(np.mean([f[expression_key] for f in frames])) if frames else None,
        "flicker": float(np.mean(flickers)) if flickers else None,
        "integrity_ok": sum(bool(v["integrity"]["all_ok"]) for v in ok),
        "wall_time_s": round(sum(v["seconds"]["total"] for v in ok), 3),
    }


# ----------------------------------------------------------------------------------------- score cache


class ScoreCache:
    """``OUT/scores.jsonl``: one line per scored video, keyed by a hash of everything the score depends on."""

    def __init__(self, path: Path) -> None:
        from pipeline.batch import RecordStore

        self.store = RecordStore(path)  # same append-only JSON-lines format; "job" holds the key
        self.entries = self.store.load()

    def get(self, key: str) -> dict | None:
        entry = self.entries.get(key)
        return entry.get("result") if entry else None

    def put(self, key: str, video: str, result: dict) -> None:
        entry = {"job": key, "video": video, "result": result}
        self.store.append(entry)
        self.entries[key] = entry


@lru_cache(maxsize=1)
def scorer_version() -> str:
    """sha256 of the scoring code (this module and the evaluator): a changed scorer scores again."""
    from pipeline import evaluate

    h = hashlib.sha256()
    for path in (Path(__file__), Path(evaluate.__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()


def score_key(
    method: str,
    original_sha: str,
    swapped_sha: str,
    source_id: str,
    gallery_sig: str,
    ff: dict,
    networks_sig: str,
) -> str:
    """Hex sha256 naming one score in the cache (``networks_sig``: :meth:`FaceScorer.signature`)."""
    text = json.dumps(
        {
            "networks": networks_sig,
            "method": method,
            "original": original_sha,
            "swapped": swapped_sha,
            "source": source_id,
            "gallery": gallery_sig,
            "settings": {k: ff[k] for k in SCORE_KEYS},
            "scorer": scorer_version(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------------------- outputs


def package_versions() -> dict[str, str]:
    """Versions of what the numbers depend on: swapstream, torch, dlib, decord, av, numpy, opencv, python."""
    import importlib

    versions = {"swapstream": pipeline.__version__, "python": platform.python_version()}
    for name, module in (
        ("torch", "torch"),
        ("dlib", "dlib"),
        ("decord", "decord"),
        ("av", "av"),
        ("numpy", "numpy"),
        ("opencv", "cv2"),
    ):
        try:
            versions[name] = str(getattr(importlib.import_module(module), "__version__", "unknown"))
        except ImportError:
            versions[name] = "not installed"
    return versions


def expression_column(results: dict) -> tuple[str, str]:
    """(totals key, unit) of the expression error the results were scored with."""
    if results["evaluate"]["expression"] == "landmarks":
        return "expression_error_iod", "IOD"
    return "expression_error_coeff", "3DMM coeff"


def results_markdown(results: dict) -> str:
    """``results.md``: the settings, one table row per method, then every per-video error."""
    rules = results["ffpp"]
    nets = results["evaluator"]
    key, unit = expression_column(results)
    lines = [
        f"# FaceForensics++ benchmark: split {results['split']}, {results['compression']}",
        "",
        f"{rules['frames_per_video']} evenly spaced frames per video (decord); ID retrieval among "
        f"{len(results['gallery'])} source identities of the split; dlib HOG detector and 68 landmarks; "
        f"identity: {nets['identity']}; pose: {nets['pose']}; expression: {nets['expression']} (evaluator "
        "networks, not the pipeline's); flicker = face-region frame difference, swapped over original "
        "(1.0 = as steady). Rules and per-video values: results.json.",
        "",
        f"| method | ID retrieval % | pose (deg) | expression ({unit}) | flicker | videos | frames "
        "| wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, method in results["methods"].items():
        t = method["totals"]
        lines.append(
            f"| {name} | {fmt(t['id_retrieval_pct'], '.1f')} | {fmt(t['pose_error_deg'], '.2f')} | "
            f"{fmt(t[key], '.3f')} | {fmt(t['flicker'], '.2f')} | {t['videos']} | "
            f"{t['frames']} | {t['wall_time_s']:.1f} |"
        )
    errors = [
        f"- {name} {video}: {entry['error']}"
        for name, method in results["methods"].items()
        for video, entry in method["videos"].items()
        if entry.get("status") != "ok"
    ]
    errors += [
        f"- identity {vid}: {ident['error']}"
        for vid, ident in results["identities"].items()
        if ident["error"]
    ]
    if errors:
        lines += ["", f"## Skipped ({len(errors)})", "", *errors]
    return "\n".join(lines) + "\n"


def _fit(image: np.ndarray | None, side: int = TILE) -> np.ndarray:
    """``image (H, W, 3) uint8`` scaled to fit a ``side``² black tile (None → black tile)."""
    from PIL import Image

    tile = np.zeros((side, side, 3), np.uint8)
    if image is None or image.size == 0:
        return tile
    h, w = image.shape[:2]
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    top, left = (side - nh) // 2, (side - nw) // 2
    tile[top : top + nh, left : left + nw] = small
    return tile


def contact_sheet(results: dict, method: str, out: Path, rows: int) -> bytes:
    """PNG: for the first ``rows`` scored videos of ``method``, the original target frame | the source
    identity photo | the same frame of each method's video that has it (middle scored frame)."""
    from PIL import Image, ImageDraw

    from pipeline.run import load_image

    methods = [method, *sorted(m for m in results["methods"] if m != method)]
    videos = [(k, v) for k, v in results["methods"][method]["videos"].items() if v.get("status") == "ok"]
    labels = ["target", "source", *methods]
    grid: list[list[np.ndarray]] = []
    for key, entry in videos[: max(0, rows)]:
        index = entry["frame_indices"][len(entry["frame_indices"]) // 2]
        row = [_frame_or_none(Path(entry["original"]), index)]
        photo = results["identities"].get(entry["source"], {}).get("photo")
        row.append(load_image(out / photo) if photo and (out / photo).is_file() else None)
        for m in methods:
            other = results["methods"][m]["videos"].get(key, {})
            ok = other.get("status") == "ok"
            row.append(_frame_or_none(Path(other["path"]), index) if ok else None)
        grid.append([_fit(x) for x in row])
    width = TILE * len(labels)
    sheet = Image.new("RGB", (width, CONTACT_LABEL_H + TILE * max(1, len(grid))), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, label in enumerate(labels):
        draw.text((i * TILE + 4, 6), label[:30], fill=(255, 255, 255))
    if not grid:
        draw.text((4, CONTACT_LABEL_H + 6), "no video was scored", fill=(255, 255, 255))
    for r, row in enumerate(grid):
        for c, tile in enumerate(row):
            sheet.paste(Image.fromarray(tile), (c * TILE, CONTACT_LABEL_H + r * TILE))
        draw.text((4, CONTACT_LABEL_H + r * TILE + 4), videos[r][0], fill=(255, 255, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _frame_or_none(path: Path, index: int) -> np.ndarray | None:
    try:
        reader = open_video(path)
        return read_frames(reader, path, [min(index, len(reader) - 1)])[0]
    except InputError:
        return None


# ----------------------------------------------------------------------------------------- the run


def _settings(layout: Layout, cfg: dict) -> dict:
    from pipeline.evaluator_networks import evaluator_choices

    return {
        "compression": layout.compression,
        "split": layout.split,
        "ffpp": {k: cfg["ffpp"][k] for k in SCORE_KEYS},
        "evaluate": evaluator_choices(cfg),
    }


def _previous_results(path: Path, settings: dict) -> dict | None:
    """The results.json already in OUT when made with the same split, compression and rules, else None
    (none there, unreadable); InputError when it holds results of other settings."""
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: it is rewritten
    if "evaluate" not in old:  # written before the networks were a setting: the shipped defaults scored it
        from pipeline.evaluator_networks import evaluator_choices

        old["evaluate"] = evaluator_choices({})
    flat_old, flat_new = _flatten({k: old.get(k) for k in settings}), _flatten(settings)
    differ = [f"{k}={flat_old.get(k)!r} (now {v!r})" for k, v in flat_new.items() if flat_old.get(k) != v]
    if differ:
        raise InputError(
            f"{path}: holds results made with {', '.join(differ)}: use another --out or the same settings"
        )
    return old


def _flatten(d: dict, where: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        name = f"{where}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{name}."))
        else:
            flat[name] = v
    return flat


def run_benchmark(
    root: str | Path,
    out: str | Path,
    cfg: dict,
    *,
    compression: str = "c23",
    split: str = "test",
    limit: int | None = None,
    score_only: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Swap (or with ``score_only``, only score) the split's videos; write OUT/results.{json,md} and
    OUT/contact_sheet.png; return the results dict. InputError for a missing root, originals folder or
    split file, or an OUT holding results of other settings; per-video problems go into the results."""
    from pipeline.batch import Job, config_hash, run_jobs

    started = time.perf_counter()
    ff = cfg["ffpp"]
    if int(ff["frames_per_video"]) < 1 or int(ff["flicker_every"]) < 1 or int(ff["source_stride"]) < 1:
        raise InputError(
            "ffpp.frames_per_video, ffpp.flicker_every and ffpp.source_stride must be at least 1"
        )
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: must be at least 1")
    layout = find_layout(root, compression, split, ff["splits_dir"])
    pairs = read_split(layout.split_file)
    out = Path(out)
    if score_only is not None:
        videos_dir, method = score_only_folder(score_only, layout)
        kind = "score-only"
    else:
        videos_dir, kind = None, "swap"
        method = ff["method"] or f"swapstream-{cfg['swap']['backend']}"
    if "/" in method or method in ("", ".", "..", "sources"):
        raise InputError(f"ffpp.method={method!r}: use a plain folder name")
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(layout, cfg)
    previous = _previous_results(out / "results.json", settings)

    # identities of every video of the split (the retrieval gallery), cached in OUT/sources/identities.json
    cache_path = out / "sources" / "identities.json"
    try:
        cached = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cached = {}
    identities: dict[str, Identity] = {}
    for vid in _bar(split_ids(pairs), progress, "identities"):
        identities[vid] = find_identity(vid, layout, out, ff, cached.get(vid))
    write_json_atomic(cache_path, {k: dataclasses.asdict(v) for k, v in identities.items()})
    from pipeline.evaluate import FaceScorer

    scorer = FaceScorer.from_config(cfg)
    networks_sig = scorer.signature()
    gallery_ids, gallery = gallery_of(identities, out, scorer)
    gallery_sig = hashlib.sha256(
        json.dumps([(i, identities[i].photo_sha256) for i in gallery_ids]).encode()
    ).hexdigest()

    # the videos of this run and what stops each before it starts
    todo = video_pairs(pairs)[:limit] if limit else video_pairs(pairs)
    entries: dict[str, dict] = {}
    runnable: list[tuple[str, str]] = []
    for target, source in todo:
        name = video_name(target, source)
        entry = {"target": target, "source": source, "original": str(layout.original(target))}
        problem = None
        if identities[target].error:
            problem = f"target {target}: {identities[target].error}"
        elif identities[source].error:
            problem = f"source {source}: {identities[source].error}"
        path = videos_dir / f"{name}.mp4" if videos_dir else out / method / f"{name}.mp4"
        entry["path"] = str(path)
        if problem is None and videos_dir is not None and not path.is_file():
            problem = f"{path}: no such file"
        if problem:
            entry.update(status="error", error=problem)
        else:
            runnable.append((target, source))
        entries[name] = entry

    swap_seconds: dict[str, float | None] = {}
    resumed: dict[str, bool] = {}
    if kind == "swap":
        (out / method).mkdir(exist_ok=True)
        jobs = [
            Job(layout.original(t), out / identities[s].photo, out / method / f"{video_name(t, s)}.mp4")
            for t, s in runnable
        ]
        outcomes = run_jobs(jobs, cfg, out / "records.jsonl", progress=progress)
        still = []
        for (t, s), outcome in zip(runnable, outcomes):
            name = video_name(t, s)
            entries[name]["swap"] = outcome.record
            if outcome.ok:
                swap_seconds[name] = outcome.record["seconds"]
                resumed[name] = outcome.skipped
                still.append((t, s))
            else:
                entries[name].update(status="error", error=f"swap failed: {outcome.record['error']}")
        runnable = still

    cache = ScoreCache(out / "scores.jsonl")
    for t, s in _bar(runnable, progress, f"scoring {method}"):
        name = video_name(t, s)
        entry = entries[name]
        try:
            original, swapped = layout.original(t), Path(entry["path"])
            key = score_key(
                method,
                sha256_remembered(original),
                sha256_remembered(swapped),
                s,
                gallery_sig,
                ff,
                networks_sig,
            )
            result = cache.get(key)
            if result is None:
                began = time.perf_counter()
                result = score_video(
                    original, swapped, s, out / identities[s].photo, gallery_ids, gallery, cfg, scorer
                )
                result["score_seconds"] = round(time.perf_counter() - began, 3)
                cache.put(key, name, result)
        except (InputError, OSError) as exc:
            entry.update(status="error", error=str(exc) if isinstance(exc, InputError) else reason(exc))
            continue
        except Exception as exc:  # av/decord failures deep in a corrupt file: this video only
            entry.update(status="error", error=f"{entry['path']}: scoring failed ({one_line(exc)})")
            continue
        swap_s = swap_seconds.get(name)
        entry.update(status="ok", error=None, **result)
        entry["seconds"] = {
            "swap": swap_s,
            "score": result["score_seconds"],
            "total": round((swap_s or 0.0) + result["score_seconds"], 3),
        }
        entry["resumed"] = resumed.get(name, False)

    results = previous or {}
    results.update(
        {
            "benchmark": "FaceForensics++",
            "root": str(layout.root),
            "originals": str(layout.originals),
            "split_file": str(layout.split_file),
            **settings,
            "rules": RULES,
            "evaluator": scorer.descriptions(),
            "gallery": gallery_ids,
            "identities": {k: dataclasses.asdict(v) for k, v in identities.items()},
        }
    )
    methods = results.setdefault("methods", {})
    methods[method] = {
        "kind": kind,
        "folder": str(videos_dir if videos_dir else out / method),
        "limit": limit,
        "config": cfg,
        "config_sha256": config_hash(cfg),
        "versions": package_versions(),
        "run_seconds": round(time.perf_counter() - started, 3),
        "totals": totals_of(entries, scorer.expression_key),
        "videos": entries,
    }
    write_json_atomic(out / "results.json", results)
    write_bytes_atomic(out / "results.md", results_markdown(results).encode("utf-8"))
    write_bytes_atomic(
        out / "contact_sheet.png", contact_sheet(results, method, out, int(ff["contact_sheet_videos"]))
    )
    return results


def _bar(items: list, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="video", disable=not enabled, dynamic_ncols=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline ffpp``; prints the table rows and where the results are; exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline ffpp",
        description="FaceForensics++ benchmark: swap each target video of a split with its paired source "
        "(or score an existing folder of swaps) with fixed networks, frames and pairing",
    )
    parser.add_argument("--root", required=True, help="FaceForensics++ folder (original_sequences/, splits/)")
    parser.add_argument("--out", required=True, help="run folder (results, swapped videos, records)")
    parser.add_argument("--compression", default="c23", help="c0 (raw), c23 or c40 (default c23)")
    parser.add_argument(
        "--split", default="test", help="train, val or test (splits/<split>.json; default test)"
    )
    parser.add_argument("--limit", type=int, help="only the first N videos of the split")
    parser.add_argument(
        "--score-only",
        metavar="DIR",
        help="score this folder of TTT_SSS.mp4 swaps (as given or under ROOT) instead of swapping",
    )
    parser.add_argument("--config", help="YAML config merged over configs/default.yaml")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. executor=local"
    )
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")

    from pipeline.cli import guarded
    from pipeline.config import load_config

    def benchmark() -> str:
        cfg = load_config(args.config, [*args.overrides, *extra])
        results = run_benchmark(
            args.root,
            args.out,
            cfg,
            compression=args.compression,
            split=args.split,
            limit=args.limit,
            score_only=args.score_only,
            progress=not args.quiet,
        )
        key, unit = expression_column(results)
        lines = []
        for name, method in results["methods"].items():
            t = method["totals"]
            lines.append(
                f"ffpp {name}: {t['videos']} videos, {t['frames']} frames, ID retrieval "
                f"{fmt(t['id_retrieval_pct'], '.1f')} %, pose {fmt(t['pose_error_deg'], '.2f')} deg, "
                f"expression {fmt(t[key], '.3f')} {unit}, flicker {fmt(t['flicker'], '.2f')}, "
                f"{t['errors']} skipped, {t['wall_time_s']:.1f} s"
            )
        out = Path(args.out)
        lines.append(
            f"ffpp: results in {out / 'results.json'}, {out / 'results.md'}, {out / 'contact_sheet.png'}"
        )
        return "\n".join(lines)

    records = Path(args.out) / "records.jsonl"
    return guarded(
        benchmark, f"finished videos are recorded in {records}: run again to resume", debug=args.debug
    )


if __name__ == "__main__":
    sys.exit(main())
