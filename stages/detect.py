"""Face detection stage: MTCNN on keyframes, faces carried by optical flow between; FaceRecords per frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from models.mtcnn import MTCNN, Detection
from models.runtime import check_shape, resolve_device
from stages.geometry import estimate_similarity, transform_points
from stages.scene import SceneCuts
from stages.types import FaceRecord, FrameBatch

CARRY_MIN_POINTS = 3  # of a face's 5 points that must pass the flow check for it to be carried
CARRY_MARGIN = 0.5  # the flow window around the faces' boxes, grown by this share of the larger box side
CARRY_MIN_WINDOW = 8  # px: a flow window thinner than twice this (faces leaving the frame) carries nothing


def to_records(detection: Detection, min_score: float) -> list[FaceRecord]:
    """One frame's MTCNN output → FaceRecords with score >= ``min_score``, largest box first."""
    boxes, scores, points = detection
    faces = [
        FaceRecord(box=boxes[k].copy(), score=float(scores[k]), points5=points[k].copy())
        for k in range(len(boxes))
        if scores[k] >= min_score
    ]
    # Stable sort: equal areas keep the detector's (score) order.
    return sorted(faces, key=lambda f: -f.area)


@dataclass
class _VideoState:
    """What carrying faces to the next frame needs: the last frame and its faces, and whether the
    frames up to the next keyframe must be detected (a face was lost, or a detected frame had none)."""

    frame: np.ndarray | None = None
    faces: list[FaceRecord] = field(default_factory=list)
    lost: bool = False


def _flow_window(faces: list[FaceRecord], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Rows r1:r2 and columns c1:c2 of the frame ``shape`` around every face's box, grown on each side by
    ``CARRY_MARGIN`` of the box's larger side (room for the motion and the flow's window)."""
    boxes = np.stack([f.box for f in faces]).astype(np.float64)
    grow = CARRY_MARGIN * np.max(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    x1, y1 = np.floor(boxes[:, :2].min(0) - grow).astype(int)
    x2, y2 = np.ceil(boxes[:, 2:].max(0) + grow).astype(int)
    h, w = shape[:2]
    return max(0, y1), min(h, y2), max(0, x1), min(w, x2)


def carry_faces(
    faces: list[FaceRecord], prev_frame: np.ndarray, frame: np.ndarray, min_points: int = CARRY_MIN_POINTS
) -> list[FaceRecord] | None:
    """The previous frame's ``faces`` moved into this frame, or None when one cannot be followed.

    Each face's 5 points are followed by pyramidal Lucas-Kanade flow (round-trip checked,
    :func:`stages.landmark_flow.landmark_flow`), computed on the grey window of both frames around the
    faces (:func:`_flow_window`), not the whole frame; the similarity transform (Umeyama) of the points
    that pass moves its points and box together, so the face keeps its shape and only its pose follows
    the motion. A face with fewer than ``min_points`` points passing is lost: the frame then needs the
    detector. prev_frame, frame: ``(H, W, 3) uint8`` RGB. Score and box extent are carried as they are.
    """
    import cv2

    from stages.landmark_flow import landmark_flow

    if not faces:
        return None
    r1, r2, c1, c2 = _flow_window(faces, frame.shape)
    if r2 - r1 < 2 * CARRY_MIN_WINDOW or c2 - c1 < 2 * CARRY_MIN_WINDOW:  # the faces left the frame
        return None
    prev_gray = cv2.cvtColor(np.ascontiguousarray(prev_frame[r1:r2, c1:c2]), cv2.COLOR_RGB2GRAY)
    gray = cv2.cvtColor(np.ascontiguousarray(frame[r1:r2, c1:c2]), cv2.COLOR_RGB2GRAY)
    offset = np.array([c1, r1], dtype=np.float32)
    carried = []
    for face in faces:
        points = face.points5 - offset
        motion, ok = landmark_flow(prev_gray, gray, points)
        if int(ok.sum()) < min_points:
            return None
        moved = face.points5[ok] + motion[ok].astype(np.float32)
        m = estimate_similarity(face.points5[ok], moved)
        x1, y1, x2, y2 = (float(v) for v in face.box)
        centre = transform_points(np.array([[(x1 + x2) / 2, (y1 + y2) / 2]]), m)[0]
        scale = float(np.hypot(m[0, 0], m[1, 0]))
        half = np.array([(x2 - x1) / 2, (y2 - y1) / 2]) * scale
        box = np.concatenate([centre - half, centre + half]).astype(np.float32)
        carried.append(FaceRecord(box=box, score=face.score, points5=transform_points(face.points5, m)))
    return carried


class DetectStage:
    """Fills ``batch.faces[i]`` with the faces in frame i: MTCNN on keyframes, carried by flow between them.

    cfg: the whole config; reads ``cfg["detect"]`` (min_face_size px in the decoded frame, thresholds,
    scale_factor, max_side, min_score, every) and ``cfg["runtime"]`` (torch_threads, device).
    Each FaceRecord gets box ``(4,) float32`` x1 y1 x2 y2 (pixel edges; not clipped, so a face cut by the
    frame edge keeps its full extent), score in [0, 1] and points5
    ``(5, 2) float32`` (eyes image-left/right, nose, mouth corners image-left/right), frame pixels.

    MTCNN runs on the keyframes: frame ``f`` when ``f % detect.every == 0``, a video's first frame, and a
    scene cut (``scene.threshold``). On the frames between, the faces of the frame before are carried by
    optical flow (:func:`carry_faces`), until a face cannot be followed or a keyframe found none: from
    there to the next keyframe every frame is detected. A batch's detections run as two batched MTCNN
    calls (keyframes, then lost frames): one frame alone costs MTCNN about three times a frame of a batch
    of 16 (34 against 10 ms at 512 px here). The schedule is by frame number, so a segment's run-in
    reaches the same state as the unsegmented run (``pipeline.segments.run_in_frames``). State is kept per
    ``video_id``; nothing is held back.
    """

    def __init__(self, cfg: dict) -> None:
        det = cfg["detect"]
        if det.get("model", "mtcnn") != "mtcnn":
            raise ValueError(f"detect.model={det['model']!r} is not supported here: use detect.model=mtcnn")
        torch.set_num_threads(int(cfg["runtime"]["torch_threads"]))
        self.min_score = float(det["min_score"])
        self.every = int(det["every"])
        self.detector = MTCNN(
            min_face_size=float(det["min_face_size"]),
            thresholds=[float(t) for t in det["thresholds"]],
            scale_factor=float(det["scale_factor"]),
            max_side=int(det["max_side"]) if det.get("max_side") else None,
            device=resolve_device(cfg["runtime"]["device"]),
        )
        self.scene = SceneCuts(cfg) if self.every > 1 else None
        self._videos: dict[str, _VideoState] = {}
        self.detected_frames = 0  # how many frames MTCNN ran on (for measurements)

    def _detect(self, frames: np.ndarray) -> list[list[FaceRecord]]:
        self.detected_frames += len(frames)
        return [to_records(d, self.min_score) for d in self.detector.detect(frames)]

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        """Faces of ``batch.frames`` ``(N, H, W, 3) uint8`` RGB; replaces ``batch.faces``."""
        if not len(batch):
            batch.faces = []
            return batch
        if self.every == 1:
            batch.faces = self._detect(batch.frames)
            return batch
        state = self._videos.setdefault(batch.video_id, _VideoState())
        cuts = self.scene.of(batch)
        planned = [
            i
            for i, f in enumerate(batch.indices)
            if int(f) % self.every == 0 or cuts[i] or (i == 0 and state.frame is None)
        ]
        faces: dict[int, list[FaceRecord]] = {}
        if planned:
            faces.update(zip(planned, self._detect(batch.frames[planned])))
        lost_frames = []  # detected together after the pass: their faces are carried nowhere
        prev = state.frame
        for i, frame in enumerate(batch.frames):
            if i in faces:
                state.lost = not faces[i]
            elif not state.lost:
                carried = carry_faces(state.faces, prev, frame)
                state.lost = carried is None
                if carried is not None:
                    faces[i] = carried
            if state.lost and i not in faces:
                lost_frames.append(i)
            prev, state.faces = frame, faces.get(i, [])
        state.frame = batch.frames[-1].copy()  # later stages paste into the batch's frames
        if lost_frames:
            faces.update(zip(lost_frames, self._detect(batch.frames[lost_frames])))
            state.faces = faces[len(batch) - 1]
        batch.faces = [sorted(faces[i], key=lambda f: -f.area) for i in range(len(batch))]
        return batch

    def flush(self) -> list[FrameBatch]:
        """Nothing is held back; the videos' carried faces and last frames are dropped (their end)."""
        for video_id in self._videos:
            self.scene.end_video(video_id)
        self._videos.clear()
        return []

    def detect_image(self, image: np.ndarray) -> list[FaceRecord]:
        """Faces in one still image ``(H, W, 3) uint8`` RGB, largest first."""
        image = np.asarray(image)
        check_shape(image, ("H", "W", 3), "image", np.uint8, "uint8 RGB")
        return to_records(self.detector.detect(image[None])[0], self.min_score)
