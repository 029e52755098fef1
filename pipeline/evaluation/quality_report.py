"""The quality grid's report: its targets and artifact limits, quality.md's table, the contact sheet."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

TILE = 160  # px, side of one contact-sheet tile
LABEL_W = 150  # px, width of the label column
FACE_MARGIN = 0.45  # tiles show the face box grown by this share of its size on each side

# The done-when targets of the quality issue, checked per pair (median over pairs for the mouth error).
TARGETS = {
    "nearer_source_share": 0.90,  # at least
    "mouth_open_error_iod": 0.02,  # median over pairs, at most
    "flicker": 1.10,  # at most
    "background_psnr_db": 35.0,  # worst frame, at least
    "jitter_iod": 0.006,  # talking heads, at most
}


# Limits of the evaluator's artifact measures (pipeline.evaluation.artifacts.artifact_measures, medians over
# a pair's frames), calibrated on outputs labelled by eye (tests/artifact_labels.yaml): above them a viewer
# sees pasted hair or glasses, a painted-over fringe or frame, or a seam (the seam, delta E of the tone step
# at the face's border, separates the labels imperfectly: see the README).
ARTIFACT_LIMITS = {
    "foreign_share": 0.03,
    "occluder_covered_share": 0.03,
    "seam": 5.5,
}


def _get(result: dict, *keys: str) -> float | None:
    node: Any = result
    for k in keys:
        if not isinstance(node, dict) or node.get(k) is None:
            return None
        node = node[k]
    return float(node)


COLUMNS = (  # (header, path in the evaluator's dict, format)
    ("nearer src", ("identity", "nearer_source_share"), ".0%"),
    ("nearer ref", ("identity", "nearer_reference_share"), ".0%"),
    ("d(src)", ("identity", "distance_to_source", "median"), ".3f"),
    ("d(orig)", ("identity", "distance_to_original", "median"), ".3f"),
    ("mouth open", ("mouth_open_error_iod", "median"), ".3f"),
    ("eyes open", ("eyes_open_error_iod", "median"), ".3f"),
    ("expr", ("expression_error_iod", "median"), ".3f"),
    ("flicker", ("flicker",), ".2f"),
    ("jitter", ("jitter_iod",), ".4f"),
    ("bg PSNR", ("integrity", "background_psnr_db", "worst_frame"), ".1f"),
    ("foreign", ("artifacts", "foreign_share"), ".3f"),
    ("covered", ("artifacts", "occluder_covered_share"), ".3f"),
    ("seam", ("artifacts", "seam"), ".2f"),
)


# Per-pair checks, in the order a miss is named: (name, path in the evaluator's dict, limit, the value must
# stay above the limit). The mouth-open target is a median over pairs, checked in the table's last row.
CHECKS = (
    ("identity", ("identity", "nearer_source_share"), TARGETS["nearer_source_share"], True),
    ("flicker", ("flicker",), TARGETS["flicker"], False),
    ("background", ("integrity", "background_psnr_db", "worst_frame"), TARGETS["background_psnr_db"], True),
    ("jitter", ("jitter_iod",), TARGETS["jitter_iod"], False),
    *((key, ("artifacts", key), limit, False) for key, limit in ARTIFACT_LIMITS.items()),
)


def misses(result: dict) -> list[str]:
    """The per-pair targets this pair misses (None values are not misses: nothing was measured). The jitter
    target is the talking heads' (``talking_head`` False: a clip the grid does not list as one)."""
    out = []
    for name, path, limit, floor in CHECKS:
        if name == "jitter" and result.get("talking_head") is False:
            continue
        value = _get(result, *path)
        if value is not None and (value < limit if floor else value > limit):
            out.append(name)
    return out


def markdown(results: list[dict], grid_path: Path, cfg_text: str) -> str:
    """``quality.md``: one row per pair, then the medians over pairs."""
    head = ["pair", "swapped", "scored", *[c[0] for c in COLUMNS], "misses"]
    lines = [
        "# Quality grid",
        "",
        f"Grid: `{grid_path}`; swap config: {cfg_text}. Targets: identity nearer the source in >= "
        f"{TARGETS['nearer_source_share']:.0%} of scored frames, median mouth-open error <= "
        f"{TARGETS['mouth_open_error_iod']} IOD, flicker <= {TARGETS['flicker']}, background PSNR >= "
        f"{TARGETS['background_psnr_db']} dB, jitter <= {TARGETS['jitter_iod']} IOD on the talking heads "
        "(the grid's talking_heads; other clips' jitter is shown, not checked). "
        "nearer ref: the same share against another photo of the source's person (the grid's references; "
        "n/a without one), which what only the pasted photo has (a hat, its light) cannot earn. "
        "Per-pair JSON in scores/.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        if "error" in r:
            swapped = f"{r['faces_swapped']}/{r['swap_frames']}" if "faces_swapped" in r else "-"
            lines.append(f"| {r['pair']} | {swapped} | {r['error']} |" + " |" * (len(head) - 3))
            continue
        cells = [r["pair"], f"{r['faces_swapped']}/{r['swap_frames']}", str(r["frames"]["scored"])]
        for _, path, spec in COLUMNS:
            v = _get(r, *path)
            cells.append("n/a" if v is None else format(v, spec))
        cells.append(", ".join(misses(r)) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    med = ["**median**", "", ""]
    for _, path, spec in COLUMNS:
        vals = [v for v in (_get(r, *path) for r in results if "error" not in r) if v is not None]
        med.append("n/a" if not vals else format(float(np.median(vals)), spec))
    med.append("")
    lines.append("| " + " | ".join(med) + " |")
    return "\n".join(lines) + "\n"


def _face_box(image: np.ndarray, upsample: int) -> np.ndarray | None:
    from pipeline.evaluation.faces import detect_faces

    faces = detect_faces(image, upsample)
    return faces[0].box if faces else None


def _zoom(image: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """A ``TILE``² tile of ``image`` around ``box`` grown by ``FACE_MARGIN`` (the whole image when None)."""
    from pipeline.evaluation.ffpp_report import fit_tile

    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(x2 - x1, y2 - y1) * (1 + 2 * FACE_MARGIN)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        h, w = image.shape[:2]
        a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        image = image[b : int(min(h, cy + side / 2)), a : int(min(w, cx + side / 2))]
    return fit_tile(image, TILE)


def sheet_row(result: dict, clip: Path, upsample: int) -> np.ndarray:
    """``(TILE, LABEL_W + 5 TILE, 3) uint8``: label | original | source | output at 1/3 of the clip |
    original | output at 2/3."""
    from PIL import Image, ImageDraw

    from pipeline.evaluation.integrity import stream_frames
    from pipeline.run import load_image

    out_path = Path(result["output"])
    n = int(result["frames"]["original"])
    picks = [n // 3, (2 * n) // 3]
    want: dict[int, dict[str, np.ndarray]] = {i: {} for i in picks}
    for key, path in (("orig", clip), ("out", out_path)):
        for index, (_, frame) in enumerate(stream_frames(path, 16)):
            if index in want:
                want[index][key] = frame
            if index >= max(picks):
                break
    photo = load_image(result["source"])
    tiles = []
    for k, index in enumerate(picks):
        orig = want[index].get("orig")
        out = want[index].get("out")
        box = _face_box(orig, upsample) if orig is not None else None
        tiles.append(_zoom(orig, box) if orig is not None else _zoom(np.zeros((8, 8, 3), np.uint8), None))
        if k == 0:
            tiles.append(_zoom(photo, _face_box(photo, 1)))
        tiles.append(_zoom(out, box) if out is not None else _zoom(np.zeros((8, 8, 3), np.uint8), None))
    label = Image.new("RGB", (LABEL_W, TILE), (0, 0, 0))
    draw = ImageDraw.Draw(label)
    draw.text((4, 4), result["clip"], fill=(255, 255, 0))
    draw.text((4, 18), Path(result["photo"]).stem[:24], fill=(255, 255, 0))
    y = 40
    for header, path, spec in COLUMNS:
        v = _get(result, *path)
        if v is not None and header in (
            "nearer src",
            "mouth open",
            "flicker",
            "jitter",
            "foreign",
            "covered",
            "seam",
        ):
            draw.text((4, y), f"{header} {format(v, spec)}", fill=(255, 255, 255))
            y += 13
    bad = misses(result)
    if bad:
        draw.text((4, y), "MISS " + ",".join(bad)[:22], fill=(255, 80, 80))
    return np.concatenate([np.asarray(label), *tiles], axis=1)


def contact_sheet(rows: list[np.ndarray]) -> bytes:
    """PNG bytes of the rows under a header line."""
    from PIL import Image, ImageDraw

    width = LABEL_W + 5 * TILE
    header = Image.new("RGB", (width, 20), (0, 0, 0))
    draw = ImageDraw.Draw(header)
    for i, text in enumerate(["original", "source", "output", "original", "output"]):
        draw.text((LABEL_W + i * TILE + 4, 4), text, fill=(255, 255, 255))
    parts = [np.asarray(header), *rows] if rows else [np.asarray(header)]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(parts, axis=0)).save(buf, format="PNG")
    return buf.getvalue()
