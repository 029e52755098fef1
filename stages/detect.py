"""Face detection stage: MTCNN over each batch of frames, one list of FaceRecord per frame."""

from __future__ import annotations

import numpy as np
import torch

from models.mtcnn import MTCNN, Detection
from models.runtime import check_shape, resolve_device
from stages.types import FaceRecord, FrameBatch


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


class DetectStage:
    """Fills ``batch.faces[i]`` with the faces MTCNN finds in frame i (stateless).

    cfg: the whole config; reads ``cfg["detect"]`` (min_face_size px in the decoded frame, thresholds,
    scale_factor, max_side, min_score) and ``cfg["runtime"]`` (torch_threads, device).
    Each FaceRecord gets box ``(4,) float32`` x1 y1 x2 y2 (pixel edges; not clipped, so a face cut by the
    frame edge keeps its full extent), score in [0, 1] and points5
    ``(5, 2) float32`` (eyes image-left/right, nose, mouth corners image-left/right), frame pixels.
    """

    def __init__(self, cfg: dict) -> None:
        det = cfg["detect"]
        if det.get("model", "mtcnn") != "mtcnn":
            raise ValueError(f"detect.model={det['model']!r} is not supported here: use detect.model=mtcnn")
        torch.set_num_threads(int(cfg["runtime"]["torch_threads"]))
        self.min_score = float(det["min_score"])
        self.detector = MTCNN(
            min_face_size=float(det["min_face_size"]),
            thresholds=[float(t) for t in det["thresholds"]],
            scale_factor=float(det["scale_factor"]),
            max_side=int(det["max_side"]) if det.get("max_side") else None,
            device=resolve_device(cfg["runtime"]["device"]),
        )

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        """Detect faces in ``batch.frames`` ``(N, H, W, 3) uint8`` RGB; replaces ``batch.faces``."""
        detections = self.detector.detect(batch.frames) if len(batch) else []
        batch.faces = [to_records(d, self.min_score) for d in detections]
        return batch

    def flush(self) -> list[FrameBatch]:
        """Stateless: nothing held back."""
        return []

    def detect_image(self, image: np.ndarray) -> list[FaceRecord]:
        """Faces in one still image ``(H, W, 3) uint8`` RGB, largest first."""
        image = np.asarray(image)
        check_shape(image, ("H", "W", 3), "image", np.uint8, "uint8 RGB")
        return to_records(self.detector.detect(image[None])[0], self.min_score)
