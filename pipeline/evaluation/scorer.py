"""FaceScorer: the evaluator's per-face identity, pose and expression measures, on the networks configured."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.expression import expression_error
from pipeline.evaluation.faces import DlibFace, descriptor, head_pose, source_face


class FaceScorer:
    """The evaluator's per-face measurements, with the networks ``cfg['evaluate']`` chose.

    identity, pose, expression: the learned adapters that
    :func:`pipeline.evaluation.networks.build_evaluator_networks` gives, or None for the shipped defaults:
    dlib's 128-d descriptor (Euclidean distance), PnP on 6 dlib landmarks, Procrustes-aligned landmarks.
    Used by :func:`evaluate` and the FF++ benchmark alike, so both score with the same networks. Images are
    ``(H, W, 3) uint8`` RGB, faces :class:`DlibFace`.
    """

    def __init__(self, identity: Any = None, pose: Any = None, expression: Any = None) -> None:
        self.identity, self.pose, self.expression = identity, pose, expression

    @classmethod
    def from_config(cls, cfg: dict) -> FaceScorer:
        """Load what ``cfg['evaluate']`` names (ModelFileError for a missing checkpoint, no fallback)."""
        from pipeline.evaluation.networks import build_evaluator_networks

        nets = build_evaluator_networks(cfg)
        return cls(nets["identity"], nets["pose"], nets["expression"])

    def embedding(self, image: np.ndarray, face: DlibFace) -> np.ndarray:
        """Identity vector of ``face``: dlib ``(128,) float64`` or the network's unit ``(512,) float32``."""
        if self.identity is None:
            return descriptor(image, face)
        return self.identity.embed_landmarks(image, face.landmarks)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Identity distance: Euclidean for dlib descriptors, cosine (1 - cos) for network embeddings."""
        if self.identity is None:
            return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
        return self.identity.distance(a, b)

    def source_embedding(self, path: str | Path, upsample: int = 1) -> np.ndarray:
        """Embedding of the largest face of a photo (:func:`pipeline.evaluation.faces.source_face`);
        InputError when none is found."""
        image, face, _ = source_face(path, upsample)
        return self.embedding(image, face)

    def pose_angles(
        self, image: np.ndarray, face: DlibFace, width: int, height: int
    ) -> tuple[float, float, float] | None:
        """(yaw, pitch, roll) degrees of ``face``, or None when it cannot be estimated."""
        if self.pose is None:
            return head_pose(face.landmarks, width, height)
        return self.pose.angles(image, face.box, face.landmarks)

    @property
    def expression_key(self) -> str:
        """Result key of the expression error: ``expression_error_iod`` (landmarks) or ``_coeff`` (3DMM)."""
        return "expression_error_coeff" if self.expression else "expression_error_iod"

    def expression_error(
        self, output: np.ndarray, face_out: DlibFace, original: np.ndarray, face_orig: DlibFace
    ) -> float:
        """Expression difference of the output face from the original's (unit: :attr:`expression_key`)."""
        if self.expression is None:
            return expression_error(face_out.landmarks, face_orig.landmarks)
        net = self.expression
        return net.error(net.code(output, face_out.landmarks), net.code(original, face_orig.landmarks))

    def descriptions(self) -> dict[str, str]:
        """What scores identity, pose and expression, for a result's ``evaluator`` block."""
        return {
            "identity": self.identity.description
            if self.identity
            else "dlib_face_recognition_resnet_model_v1 (128-d, same person below 0.6)",
            "pose": self.pose.description if self.pose else "PnP of 6 dlib landmarks on a generic 3D face",
            "expression": self.expression.description
            if self.expression
            else "Procrustes-aligned dlib brow/eye/mouth landmarks, in inter-ocular distances",
        }

    def signature(self) -> str:
        """sha256 of the networks' choices and weights: scores made with other networks differ."""
        h = hashlib.sha256(json.dumps(self.descriptions(), sort_keys=True).encode())
        for net in (self.identity, self.pose, self.expression):
            if net is not None:
                for name, tensor in net.network.state_dict().items():
                    h.update(name.encode())
                    h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
