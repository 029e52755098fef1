"""FaceForensics++ scoring: a swapped video against its original, a method's totals, the score cache."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.errors import InputError
from pipeline.evaluation.ffpp_layout import frame_indices, open_video, read_frames

if TYPE_CHECKING:
    from pipeline.evaluation.scorer import FaceScorer

RULE_KEYS = ("frames_per_video", "source_frames", "source_stride", "frontal_yaw", "source_margin", "upsample")
SCORE_KEYS = (*RULE_KEYS, "flicker_every")


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
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.evaluation.faces import MATCH_IOU, angle_difference, box_iou, detect_faces

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
    :attr:`pipeline.evaluation.scorer.FaceScorer.expression_key`); flicker mean over videos."""
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
    """sha256 of the scoring code (every module of this package but the quality grid's): a changed scorer
    scores again."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if not path.name.startswith("quality"):
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
