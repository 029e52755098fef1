"""FaceForensics++ source identities: per split video, the frame whose face is its photo and gallery entry.

The rule is in the module doc of :mod:`pipeline.evaluation.ffpp` (``Source identity``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import InputError, reason
from models.files import png_bytes, sha256_remembered, write_bytes_atomic
from pipeline.evaluation.ffpp_layout import Layout, open_video, read_frames

if TYPE_CHECKING:
    from pipeline.evaluation.scorer import FaceScorer


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
    from pipeline.evaluation.faces import detect_faces, head_pose

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
