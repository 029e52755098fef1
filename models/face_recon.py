"""Deep3DFaceRecon's 3DMM coefficient regressor (ResNet-50), our own code, loading its public checkpoint.

Deng et al., "Accurate 3D Face Reconstruction with Weakly-Supervised Learning", CVPRW 2019; our own code, laid
out so its ``epoch_20.pth`` loads strictly.

Facts read off the public code (GitHub ``sicxu/Deep3DFaceRecon_pytorch``: ``models/networks.py``,
``models/base_model.py``, ``models/facerecon_model.py``, ``models/bfm.py``, ``util/preprocess.py``,
``util/load_mats.py``, ``test.py``):

- Network ``net_recon`` = ``ReconNetWrapper('resnet50', use_last_fc=False)``: ``backbone`` is a
  torchvision-layout ResNet-50 whose ``fc`` is not built (``AdaptiveAvgPool2d((1, 1))`` output kept 4-D),
  and ``final_layers`` a ModuleList of seven 1x1 ``Conv2d(2048, n, bias=True)`` with n = 80 (identity),
  64 (expression), 80 (texture), 3 (angles), 27 (SH lighting), 2 (tx, ty), 1 (tz). Forward concatenates
  them on channels and flattens: ``(N, 257)``.
- Coefficient order (``ParametricFaceModel.split_coeff``): id ``[:80]``, exp ``[80:144]``, tex
  ``[144:224]``, angle ``[224:227]`` (radians, x/y/z, ``R = Rz @ Ry @ Rx``), gamma ``[227:254]``,
  trans ``[254:257]``. The expression coefficients weight the 64 first expression PCA components.
- Checkpoint: ``BaseModel.save_networks`` writes ``{'net_recon': net.state_dict(), 'opt_00': ...,
  'sched_00': ...}`` (DataParallel/DDP unwrapped, so no ``module.`` prefix) to
  ``checkpoints/<name>/epoch_<N>.pth``; ``load_networks`` reads ``state_dict['net_recon']`` strictly.
- Input (``test.py``): the aligned crop as ``(N, 3, 224, 224) float32`` **RGB in [0, 1]**
  (``np.array(im) / 255``), no mean/std normalisation.
- Alignment (``util/preprocess.align_img`` with ``target_size=224, rescale_factor=102``): 68 landmarks
  are reduced to 5 by ``extract_5p`` (nose tip 30, mean of eye corners 36/39 and 42/45, mouth corners
  48/54, reordered left eye, right eye, nose, left mouth, right mouth); y is flipped to point up
  (``H - 1 - y``); ``POS`` solves in least squares an affine camera from the 5 3D template points
  (``load_lm3d``: the same reduction applied to ``BFM/similarity_Lm3D_all.mat``) to the 5 image points,
  giving the projected template origin ``t`` and the mean norm ``s`` of the two camera rows; the image is
  resized (PIL bicubic) by ``102 / s`` with ``int`` sizes and a 224 window cut (``int`` offsets) around
  ``t``. Scale and translation only: the crop is **not** rotated (the network predicts roll).

:func:`align_face` follows ``align_img`` step by step (same formulas, truncations and PIL bicubic
resampling). It resamples only the 224 window (PIL ``resize(box=...)``, same pixel mapping and filter
support as the full resize then crop; measured on a photo: equal but for ±1 in 0.01 % of the values).
What is **not** exact or not confirmed:
- ``LM3D_5``, the 5 template points, is the reduction of ``similarity_Lm3D_all.mat``, a binary file we
  could not read; the values are those hard-coded identically by several independent ports of the
  method (C++ and Python). If they were wrong the crop would be shifted/scaled, never failing loudly.
- The published model was tested on 5 points from a face detector (MTCNN ``detections/*.txt``) and
  trained on 68-point ones; from dlib's 68 landmarks we use ``extract_5p`` (eye-corner means), which is
  what ``align_img`` does when given 68 points.
- A window reaching outside the image is resized in full first (as the original does), so it is exact too;
  only the cost differs.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.hopenet import FEATURES, ResNet50Trunk, check_input
from models.weights import REGISTRY

INPUT_SIZE = 224
RESCALE_FACTOR = 102.0
COEFFICIENT_SPLITS: tuple[tuple[str, int], ...] = (
    ("id", 80),
    ("exp", 64),
    ("tex", 80),
    ("angle", 3),
    ("gamma", 27),
    ("trans", 3),
)
NUM_COEFFICIENTS = sum(n for _, n in COEFFICIENT_SPLITS)  # 257
FINAL_LAYER_WIDTHS = (80, 64, 80, 3, 27, 2, 1)  # translation is split into (tx, ty) and tz

# 5 3D template points (left eye, right eye, nose tip, left mouth corner, right mouth corner), x right,
# y up, z towards the camera, in the BFM units of Deep3DFaceRecon (decimetres). See the module doc.
LM3D_5 = np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],
        [0.30979887, 0.28972036, 0.13179526],
        [0.0032535, -0.04617932, 0.55244243],
        [-0.25216928, -0.38133916, 0.22405732],
        [0.2484662, -0.38128236, 0.22235769],
    ],
    dtype=np.float64,
)


class FaceReconNet(nn.Module):
    """Deep3DFaceRecon ``ReconNetWrapper`` with a ResNet-50 backbone.

    forward: ``(N, 3, 224, 224) float32`` RGB in [0, 1], aligned by :func:`align_face` →
    ``(N, 257) float32`` coefficients (:func:`split_coefficients` names them).

    State dict: 332 entries (``backbone.*``: 318; ``final_layers.{0..6}.{weight, bias}``: 14),
    24,034,625 parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50Trunk(pool=nn.AdaptiveAvgPool2d(1))
        self.final_layers = nn.ModuleList(
            [nn.Conv2d(FEATURES, n, kernel_size=1, bias=True) for n in FINAL_LAYER_WIDTHS]
        )
        self.backbone.reset_trunk()
        # The public code zero-initialises the heads to start training; a checkpoint overwrites them. A
        # random (not zero) init keeps untrained networks informative in tests.
        for conv in self.final_layers:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "FaceReconNet")
        f = self.backbone.features(x)
        return torch.flatten(torch.cat([layer(f) for layer in self.final_layers], dim=1), 1)


def face_recon_resnet50() -> FaceReconNet:
    """A freshly initialised ``net_recon`` (ResNet-50): the layout of ``epoch_20.pth``'s ``net_recon``."""
    return FaceReconNet()


class TinyFaceRecon(nn.Module):
    """A small stand-in with :class:`FaceReconNet`'s input and output (``(N, 3, H, W)`` RGB in [0, 1] →
    ``(N, 257)``): four stride-2 convs, global average pooling, a linear map. For CPU training tests and
    smoke runs (``train.tiny``), randomly initialised and frozen; never loaded from a file."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for k in range(4):
            layers += [nn.Conv2d(c, width * 2**k, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = width * 2**k
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, NUM_COEFFICIENTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def split_coefficients(coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(N, 257)`` → {id ``(N, 80)``, exp ``(N, 64)``, tex ``(N, 80)``, angle ``(N, 3)`` radians,
    gamma ``(N, 27)``, trans ``(N, 3)``} (views, Deep3DFaceRecon order)."""
    if coeffs.ndim != 2 or coeffs.shape[1] != NUM_COEFFICIENTS:
        raise ValueError(f"expected (N, {NUM_COEFFICIENTS}) coefficients, got {tuple(coeffs.shape)}")
    out, start = {}, 0
    for name, n in COEFFICIENT_SPLITS:
        out[name] = coeffs[:, start : start + n]
        start += n
    return out


# ----------------------------------------------------------------------------------------- alignment


def five_points_from_68(landmarks68: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's 5 points ``(5, 2) float64`` from iBUG 68 landmarks (``extract_5p``): eye centres
    as the mean of the two eye corners (36/39, 42/45), nose tip 30, mouth corners 48 and 54.

    (``stages.geometry.points5_from_68`` averages all six eye points instead: close, not identical.)
    """
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack(
        [(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2, lm[30], lm[48], lm[54]],
    )


def pos_fit(points_up: np.ndarray, template3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Affine-camera least squares of ``template3d (K, 3)`` onto ``points_up (K, 2)`` (y up).

    Returns ``t (2,)``: the image position of the template origin, and ``s``: the mean norm of the two
    camera rows (pixels per template unit). The POS step of Deep3DFaceRecon's ``align_img``.
    """
    x = np.asarray(template3d, dtype=np.float64)
    xp = np.asarray(points_up, dtype=np.float64)
    k = len(x)
    a = np.zeros((2 * k, 8))
    a[0::2, 0:3] = x
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = x
    a[1::2, 7] = 1.0
    sol = np.linalg.lstsq(a, xp.reshape(-1), rcond=None)[0]
    s = (np.linalg.norm(sol[0:3]) + np.linalg.norm(sol[4:7])) / 2.0
    return np.array([sol[3], sol[7]]), float(s)


def input_window(points5: np.ndarray, height: int) -> tuple[float, float, float]:
    """Where :func:`align_face` cuts its 224 window, in the image's own pixels: ``(x0, y0, side)``, the
    window's top-left corner and side (its ``int`` truncations left out, so sub-pixel exact for a crop taken
    by resampling, e.g. a differentiable one of a training batch). points5 ``(5, 2)`` as :func:`align_face`
    takes them, in an image ``height`` px tall."""
    pts = np.asarray(points5, dtype=np.float64)
    up = np.stack([pts[:, 0], height - 1 - pts[:, 1]], axis=1)
    t, s = pos_fit(up, LM3D_5)
    side = INPUT_SIZE * s / RESCALE_FACTOR
    return float(t[0] - side / 2), float(height - t[1] - side / 2), float(side)


def align_face(
    image: np.ndarray,
    points5: np.ndarray,
    target_size: int = INPUT_SIZE,
    rescale_factor: float = RESCALE_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Deep3DFaceRecon crop of a face: ``(target, target, 3) uint8`` RGB and the parameters
    ``(w0, h0, scale, tx, ty)`` (``align_img``'s ``trans_params``).

    image: ``(H, W, 3) uint8`` RGB. points5: ``(5, 2)`` pixel points, y down, in the order of
    :func:`five_points_from_68`. Pixels outside the image are black.
    """
    h0, w0 = image.shape[:2]
    pts = np.asarray(points5, dtype=np.float64)
    up = np.stack([pts[:, 0], h0 - 1 - pts[:, 1]], axis=1)
    t, s = pos_fit(up, LM3D_5)
    scale = rescale_factor / s
    w, h = int(w0 * scale), int(h0 * scale)  # numpy astype(int32): truncation
    left = int(w / 2 - target_size / 2 + (t[0] - w0 / 2) * scale)
    top = int(h / 2 - target_size / 2 + (h0 / 2 - t[1]) * scale)
    pil = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    window = (left, top, left + target_size, top + target_size)
    if w < 1 or h < 1:
        crop = Image.new("RGB", (target_size, target_size))
    elif window[0] >= 0 and window[1] >= 0 and window[2] <= w and window[3] <= h:
        # The window of the resized image, resampled straight from the source: PIL maps output pixel
        # centres and sizes its bicubic support as for the full resize followed by a crop.
        box = (left * w0 / w, top * h0 / h, window[2] * w0 / w, window[3] * h0 / h)
        crop = pil.resize((target_size, target_size), Image.BICUBIC, box=box)
    else:
        crop = pil.resize((w, h), Image.BICUBIC).crop(window)
    params = np.array([w0, h0, scale, t[0], t[1]], dtype=np.float64)
    return np.asarray(crop, dtype=np.uint8), params


def to_input(crop: np.ndarray) -> torch.Tensor:
    """``(224, 224, 3) uint8`` RGB crop → ``(1, 3, 224, 224) float32`` in [0, 1] (``test.py``)."""
    x = torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    return REGISTRY["face_recon"].normalisation.to_network(x)
