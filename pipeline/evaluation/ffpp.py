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
  :func:`pipeline.evaluation.faces.head_pose`). The identity frame is the frontal candidate with the largest
  box (ties: the earliest frame), else the largest candidate of any yaw. Its box, grown by ``source_margin``
  of its size on each side, is written as ``OUT/sources/SSS.png``: the source photo of every swap with source
  SSS and SSS's entry in the retrieval gallery. A video with no HOG face in those frames has no identity.
- Scoring, per video: ``frames_per_video`` frames evenly spaced over the video (``round(i (n-1) / (K-1))``),
  read by random access (decord) from the original target and the swapped video. In each frame the original's
  largest HOG face and the swapped face overlapping it (IoU >= ``pipeline.evaluation.faces.MATCH_IOU``) give:
  ID retrieval top-1 (the nearest of all the split's identities is SSS), pose error (mean |difference| of yaw,
  pitch and roll, degrees) and expression error. These are measured with the evaluator's networks
  (:class:`pipeline.evaluation.scorer.FaceScorer`, chosen by ``evaluate.*`` in the config, named in
  results.json's ``evaluator``): by default dlib's 128-d descriptor (Euclidean), PnP on 6 dlib landmarks and
  Procrustes-aligned landmarks (inter-ocular distances); with user checkpoints, ArcFace (cosine), Hopenet and
  Deep3DFaceRecon expression coefficients, the kinds of network the FaceShifter paper scores FF++ with (a face
  recogniser, Hopenet, a 3D face model). Flicker and integrity (frames, timestamps, audio, background) come
  from :func:`pipeline.evaluation.evaluate.evaluate` over the whole video (every ``flicker_every``-th frame).
- Totals per method: ID retrieval % and the pose and expression means pooled over the scored frames;
  flicker the mean over videos; wall time the sum of each video's swap and scoring seconds.
- Identity consistency (:mod:`pipeline.evaluation.consistency`, cosine similarities of the identity
  embeddings): per video, from the evaluator's whole-video pass, how steady the swapped identity is
  (``steadiness``, with the original's ``steadiness_original``), the spread of its per-frame similarity to
  the source and its ``source_shift``; totals: means over videos. Across targets: each video's mean
  identity direction over its scored frames; for every source with two or more scored videos the mean
  pairwise cosine of those directions, averaged over the sources (``cross_target``, N =
  ``cross_target_sources``; ``cross_target_originals`` the same of the originals, how alike the targets
  are to begin with).

Swaps run through :func:`pipeline.batch.run_jobs` (``OUT/records.jsonl``: an interrupted run resumes, a
finished video is not redone); scores are kept in ``OUT/scores.jsonl`` under a hash of everything they depend
on. ``--score-only DIR`` scores an existing folder of ``TTT_SSS.mp4`` videos (e.g. FF++'s own
``manipulated_sequences/FaceShifter``) with the same networks; its method name is the folder's name.
Outputs (written atomically): ``results.json`` (per video and totals of every method run into OUT, with
config, package versions, identity frames and scored frame indices), ``results.md`` (one row per method) and
``contact_sheet.png`` (target | source | each method, for a few videos). A missing split file, originals
folder or root stops with one line (exit 2); a missing or corrupt video is reported in the results, skipped.

This module runs the benchmark; its parts are ``ffpp_layout`` (layout, pairing, frame picks),
``ffpp_identity`` (source identities), ``ffpp_score`` (scores and their cache) and ``ffpp_report``
(results.md, the contact sheet).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from models.errors import InputError, one_line, reason
from models.files import sha256_remembered, write_bytes_atomic, write_json_atomic
from pipeline.evaluation.evaluate import fmt
from pipeline.evaluation.ffpp_identity import Identity, find_identity, gallery_of
from pipeline.evaluation.ffpp_layout import (
    Layout,
    find_layout,
    read_split,
    score_only_folder,
    split_ids,
    video_name,
    video_pairs,
)
from pipeline.evaluation.ffpp_report import (
    contact_sheet,
    expression_column,
    package_versions,
    results_markdown,
)
from pipeline.evaluation.ffpp_score import SCORE_KEYS, ScoreCache, score_key, score_video, totals_of

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
    "flicker_integrity": "pipeline.evaluation.evaluate.evaluate over the whole video, every "
    "flicker_every-th frame",
    "totals": "ID retrieval %, pose and expression pooled over scored frames; flicker the mean over videos; "
    "wall time the sum of each video's swap and scoring seconds",
    "consistency": "cosine similarities of the evaluator's identity embeddings (pipeline.evaluation."
    "consistency). Within a video, over the frames of flicker_integrity: steadiness = mean pairwise cosine "
    "of the swapped face's per-frame embeddings (steadiness_original: of the original's), "
    "source_similarity std/range = spread of the per-frame cosine to the source photo, source_shift = "
    "mean per-frame cosine to the source of the swapped face minus the original face's; totals: means over "
    "videos. Across targets: per video the unit mean of its scored frames' unit embeddings; per source "
    "with >= 2 scored videos the mean pairwise cosine of those; cross_target = mean over those "
    "cross_target_sources sources (cross_target_originals: the same of the original faces)",
}


# ----------------------------------------------------------------------------------------- the run


def _settings(layout: Layout, cfg: dict) -> dict:
    from pipeline.evaluation.networks import evaluator_choices

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
        from pipeline.evaluation.networks import evaluator_choices

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
    from pipeline.evaluation.scorer import FaceScorer

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
                f"steadiness {fmt(t.get('steadiness'), '.3f')}, "
                f"cross-target {fmt(t.get('cross_target'), '.3f')} "
                f"({t.get('cross_target_sources', 0)} sources), "
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
