"""FaceForensics++ scoring: a swapped video against its original, a method's totals, the score cache."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.errors import InputError
from pipeline.evaluation.consistency import cross_target, mean_direction
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
    the embeddings of ``gallery_ids``. Raises InputError for unreadable videos.

    ``identity_direction``: the unit mean direction (:func:`pipeline.evaluation.consistency.mean_direction`)
    of the swapped face's and of the original face's embeddings over the scored frames, as lists of floats
    (None when no frame was scored): what :func:`totals_of` compares across the targets of one source.
    ``consistency``: the whole-video steadiness measures of :func:`evaluate` (every ``flicker_every``-th
    frame)."""
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
    emb_out: list[np.ndarray] = []  # per scored frame: the swapped face's and the original face's embedding
    emb_orig: list[np.ndarray] = []
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
        emb_out.append(embedding)
        emb_orig.append(scorer.embedding(fa, face_a))
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
        "consistency": whole["consistency"],
        "identity_direction": {
            "output": _as_list(mean_direction(np.array(emb_out))),
            "original": _as_list(mean_direction(np.array(emb_orig))),
        },
        "integrity": whole["integrity"],
        "per_frame": per_frame,
    }


def _as_list(vector: np.ndarray | None) -> list[float] | None:
    return None if vector is None else [float(x) for x in vector]


def consistency_totals(ok: list[dict]) -> dict:
    """Identity consistency of one method over its scored videos ``ok`` (entries of results.json).

    Within a video (means over the videos that have the value): ``steadiness``, ``steadiness_original``,
    ``source_similarity_std`` and ``source_shift`` (:func:`pipeline.evaluation.consistency.within_video`).
    Across targets (:func:`pipeline.evaluation.consistency.cross_target`, over sources with 2 or more
    scored videos): ``cross_target`` of the swapped faces' mean directions, ``cross_target_originals`` of
    the same videos' original faces (how alike those targets are anyway), ``cross_target_sources`` N and
    ``cross_target_videos``. Entries scored before these measures existed lack them and are left out.
    """

    def mean_of(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    within = [v["consistency"] for v in ok if v.get("consistency")]
    outputs: dict[str, list] = {}
    originals: dict[str, list] = {}
    for v in ok:
        direction = v.get("identity_direction") or {}
        if direction.get("output") is not None and direction.get("original") is not None:
            outputs.setdefault(v["source"], []).append(np.array(direction["output"]))
            originals.setdefault(v["source"], []).append(np.array(direction["original"]))
    across, across_orig = cross_target(outputs), cross_target(originals)
    return {
        "steadiness": mean_of([c["steadiness"] for c in within]),
        "steadiness_original": mean_of([c["steadiness_original"] for c in within]),
        "source_similarity_std": mean_of([c["source_similarity"]["std"] for c in within]),
        "source_shift": mean_of([c["source_shift"] for c in within]),
        "cross_target": across["mean"],
        "cross_target_originals": across_orig["mean"],
        "cross_target_sources": across["sources"],
        "cross_target_videos": across["outputs"],
        "cross_target_per_source": across["per_source"],
    }


def totals_of(videos: dict[str, dict], expression_key: str = "expression_error_iod") -> dict:
    """Totals of one method: frame-pooled ID retrieval %, pose and expression (``expression_key``, see
    :attr:`pipeline.evaluation.scorer.FaceScorer.expression_key`); flicker mean over videos; identity
    consistency (:func:`consistency_totals`)."""
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
        **consistency_totals(ok),
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
