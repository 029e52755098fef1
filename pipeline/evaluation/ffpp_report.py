"""FaceForensics++ outputs: results.md, the contact sheet, package versions, the expression unit."""

from __future__ import annotations

import io
import platform
from pathlib import Path

import numpy as np

import pipeline
from models.errors import InputError
from pipeline.evaluation.evaluate import fmt
from pipeline.evaluation.ffpp_layout import open_video, read_frames

TILE = 192  # px, side of one contact sheet tile
CONTACT_LABEL_H = 24  # px, height of the contact sheet's label row


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
        "(1.0 = as steady). Identity consistency, cosine similarities of identity embeddings (1 = alike; "
        "dlib's descriptors put different people at about 0.8): steadiness = mean over videos of the mean "
        "pairwise cosine of a video's per-frame swapped faces (in brackets: of its original faces); "
        "sd(cos src) = mean over videos of the standard deviation of the per-frame cosine to the source "
        "photo; cross-target = for each source with 2 or more scored targets, the mean pairwise cosine of "
        "its swapped videos' mean identities, averaged over the N sources (in brackets: the same of those "
        "targets' original faces). Rules and per-video values: results.json.",
        "",
        f"| method | ID retrieval % | pose (deg) | expression ({unit}) | flicker | steadiness (orig) "
        "| sd(cos src) | cross-target (targets), N | videos | frames | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, method in results["methods"].items():
        t = method["totals"]
        lines.append(
            f"| {name} | {fmt(t['id_retrieval_pct'], '.1f')} | {fmt(t['pose_error_deg'], '.2f')} | "
            f"{fmt(t[key], '.3f')} | {fmt(t['flicker'], '.2f')} | "
            f"{fmt(t.get('steadiness'), '.3f')} ({fmt(t.get('steadiness_original'), '.3f')}) | "
            f"{fmt(t.get('source_similarity_std'), '.3f')} | "
            f"{fmt(t.get('cross_target'), '.3f')} ({fmt(t.get('cross_target_originals'), '.3f')}), "
            f"{t.get('cross_target_sources', 0)} | {t['videos']} | {t['frames']} | {t['wall_time_s']:.1f} |"
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


def fit_tile(image: np.ndarray | None, side: int = TILE) -> np.ndarray:
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
        grid.append([fit_tile(x) for x in row])
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
