"""MTCNN face detector (Zhang et al. 2016): our own P-, R- and O-Net code and a batched cascade.

The weights are the three plain state_dicts shipped inside the facenet-pytorch package
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``). That package is never imported (it imports torchvision,
which we do not install): we only locate its folder and read the files with ``weights_only=True``.

Conventions:
- input frames are ``(N, H, W, 3) uint8`` RGB; the networks see NCHW float ``(x - 127.5) / 128`` on RGB,
  not transposed (the facenet-pytorch conversion already folded the original Caffe/Matlab transposition
  into the weights and into the ``permute(0, 3, 2, 1)`` before the dense layers, reproduced here);
- boxes are ``x1, y1, x2, y2`` float pixel edges: the box covers ``[x1, x2) x [y1, y2)``, width ``x2 - x1``;
- points are ``(x, y)`` pixel coordinates in the frame, order: eye (image-left), eye (image-right),
  nose tip, mouth corner (image-left), mouth corner (image-right).

Differences from facenet-pytorch's ``detect_face`` (same cascade, thresholds and NMS steps): crops are
bilinear samples from an antialiased octave pyramid with zero padding outside the frame (as the original
MTCNN; facenet-pytorch clamps the box to the frame, which stretches edge faces), boxes stay in float pixel
edges, and the nets run in fixed batch sizes so results do not depend on batch composition. On the 15
photos in shared/data/faces both find the same 17 faces (we also keep one 0.73-score candidate, which
DetectStage's min_score drops); box corners differ by a median 4 % of the face size (max 10 %), the 5
points by a median 2 % (max 9 %, on a profile face).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.checkpoints import load_state_dict_file
from models.errors import ModelFileError
from models.mtcnn_pyramid import (
    OctavePyramid,
    batched_nms,
    normalise,
    pyramid_scales,
    regress,
    resample,
    run_in_chunks,
    square,
)
from models.runtime import check_shape

WEIGHT_FILES = {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"}
INSTALL_HINT = "run `make` (it installs facenet-pytorch with --no-deps; only its weight files are used)"

Detection = tuple[np.ndarray, np.ndarray, np.ndarray]


# --------------------------------------------------------------------------------------------- weights


def facenet_weights_dir() -> Path:
    """Folder ``<site-packages>/facenet_pytorch/data`` holding the MTCNN weights (package not imported)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "MTCNN weights not found: the facenet-pytorch package is not installed "
            f"(looked for facenet_pytorch/data/pnet.pt, rnet.pt, onet.pt); {INSTALL_HINT}"
        )
    return Path(spec.submodule_search_locations[0]) / "data"


def load_weights(net: nn.Module, path: str | Path) -> nn.Module:
    """Read a plain state_dict file (``weights_only=True``) into ``net`` strictly.

    Returns ``net`` frozen (no grad), in eval mode. Errors name the file and the first bad key."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"MTCNN weight file missing: {path}; {INSTALL_HINT}")
    load_state_dict_file(net, path)
    net.requires_grad_(False)
    return net.eval()


# --------------------------------------------------------------------------------------------- networks


class PNet(nn.Module):
    """Proposal net, fully convolutional.

    forward: ``(N, 3, H, W)`` normalised float → (reg ``(N, 4, h, w)``, face prob ``(N, h, w)`` in [0, 1]),
    ``h = ceil((H - 2) / 2) - 4``: one 12x12 window every 2 input pixels.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        prob = torch.softmax(self.conv4_1(x), dim=1)[:, 1]
        return self.conv4_2(x), prob


class RNet(nn.Module):
    """Refine net. forward: ``(N, 3, 24, 24)`` normalised float → (reg ``(N, 4)``, face prob ``(N,)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The converted weights flatten in (W, H, C) order.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        prob = torch.softmax(self.dense5_1(x), dim=1)[:, 1]
        return self.dense5_2(x), prob


class ONet(nn.Module):
    """Output net. forward: ``(N, 3, 48, 48)`` normalised float → (reg ``(N, 4)``,
    points ``(N, 10)`` (5 x then 5 y, as fractions of the box), face prob ``(N,)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        prob = torch.softmax(self.dense6_1(x), dim=1)[:, 1]
        return self.dense6_2(x), self.dense6_3(x), prob


# --------------------------------------------------------------------------------------------- detector


class MTCNN:
    """Batched MTCNN cascade on CPU or GPU.

    min_face_size: smallest face searched for, px in the input frames. thresholds: P-, R-, O-Net score
    thresholds. scale_factor: pyramid step. max_side: frames whose longer side exceeds it are downscaled
    (antialiased) to it for detection, coordinates mapped back; None keeps full size. The pyramid's first
    level is fixed by min_face_size (a min_face_size face becomes 12 px), so max_side saves resizing and
    memory, not P-Net work. weights_dir: folder with pnet.pt, rnet.pt, onet.pt (default: facenet-pytorch's
    data folder).

    The nets always run in fixed batch sizes (P-Net: PNET_FRAMES frames per pyramid level, R-/O-Net:
    RNET_CROPS/ONET_CROPS crops, zero-padded), so a frame's detections are bit-identical whether it is
    detected alone or inside any batch, and the same input always gives the same output.
    """

    PNET_FRAMES = 4
    RNET_CROPS = 128
    ONET_CROPS = 32

    def __init__(
        self,
        min_face_size: float = 20.0,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        max_side: int | None = None,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must have 3 values (P-, R-, O-Net), got {list(thresholds)}")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
        if min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = int(max_side) if max_side else None
        self.device = torch.device(device)
        folder = Path(weights_dir) if weights_dir is not None else facenet_weights_dir()
        self.pnet = load_weights(PNet(), folder / WEIGHT_FILES["pnet"]).to(self.device)
        self.rnet = load_weights(RNet(), folder / WEIGHT_FILES["rnet"]).to(self.device)
        self.onet = load_weights(ONet(), folder / WEIGHT_FILES["onet"]).to(self.device)

    # ------------------------------------------------------------------ public

    @torch.inference_mode()
    def detect(self, frames: np.ndarray) -> list[Detection]:
        """Detect faces in frames of one size.

        frames: ``(N, H, W, 3) uint8`` RGB (a single ``(H, W, 3)`` image is accepted too).
        Returns per frame (boxes ``(K, 4) float32`` x1 y1 x2 y2, scores ``(K,) float32`` in [0, 1],
        points ``(K, 5, 2) float32``), best score first, in input-frame pixels. Boxes are not clipped:
        a face cut by the frame edge keeps its full extent.
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        check_shape(frames, ("N", "H", "W", 3), "frames", np.uint8, "uint8 RGB")
        n, height, width = frames.shape[:3]
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        if n == 0:
            return []

        shrink = 1.0
        if self.max_side is not None and max(height, width) > self.max_side:
            shrink = self.max_side / max(height, width)
        images = self._working_images(frames, shrink)  # (N, 3, h, w) uint8
        pyramid = OctavePyramid(images, min_side=24)
        min_face = self.min_face_size * shrink

        boxes, frame_of_box = self._stage1(pyramid, min_face)
        if len(boxes):
            boxes, frame_of_box = self._stage2(pyramid, boxes, frame_of_box)
        points = np.zeros((0, 5, 2))
        if len(boxes):
            boxes, points, frame_of_box = self._stage3(pyramid, boxes, frame_of_box)

        # Map back to input-frame pixels (exact scale per axis after rounding the working size).
        sx = width / images.shape[-1]
        sy = height / images.shape[-2]
        boxes = boxes.copy()
        boxes[:, :4] *= np.array([sx, sy, sx, sy])
        points = points * np.array([sx, sy])
        out: list[Detection] = []
        for i in range(n):
            sel = np.flatnonzero(frame_of_box == i)
            if sel.size == 0:
                out.append(empty)
                continue
            sel = sel[np.argsort(-boxes[sel, 4], kind="stable")]
            out.append(
                (
                    boxes[sel, :4].astype(np.float32),
                    boxes[sel, 4].astype(np.float32),
                    points[sel].astype(np.float32),
                )
            )
        return out

    # ------------------------------------------------------------------ stages

    def _working_images(self, frames: np.ndarray, shrink: float) -> torch.Tensor:
        """``(N, H, W, 3) uint8`` → ``(N, 3, h, w) uint8`` in channels_last memory (the fast layout for
        uint8 resizing), downscaled by ``shrink`` when it is below 1."""
        with warnings.catch_warnings():
            # Read-only inputs (decoded or object-store arrays) are only read here, never written.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        if shrink < 1.0:
            h = max(1, round(frames.shape[1] * shrink))
            w = max(1, round(frames.shape[2] * shrink))
            x = resample(x.contiguous(memory_format=torch.channels_last), (h, w))
        return x.contiguous(memory_format=torch.channels_last).to(self.device)

    def _stage1(self, pyramid: OctavePyramid, min_face: float) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over the pyramid. Returns squared candidates ``(K, 5)`` (x1 y1 x2 y2 score) and frame ids."""
        height, width = pyramid.height, pyramid.width
        thr = self.thresholds[0]
        scales = pyramid_scales(height, width, min_face, self.scale_factor)
        sizes = [(math.ceil(height * s), math.ceil(width * s)) for s in scales]
        all_boxes, all_frames = [], []
        for lh, lw in sizes:
            reg, prob = run_in_chunks(self.pnet, normalise(pyramid.resize((lh, lw))), self.PNET_FRAMES)
            prob_np = prob.cpu().numpy()
            fi, yy, xx = np.nonzero(prob_np >= thr)
            if fi.size == 0:
                continue
            sx, sy = width / lw, height / lh  # level pixel → working-image pixel
            reg_np = reg.permute(0, 2, 3, 1).cpu().numpy()[fi, yy, xx].astype(np.float64)
            cand = np.stack(
                [2 * xx * sx, 2 * yy * sy, (2 * xx + 12) * sx, (2 * yy + 12) * sy], axis=1
            ).astype(np.float64)
            score = prob_np[fi, yy, xx].astype(np.float64)
            keep = batched_nms(cand, score, fi, 0.5, "union")
            all_boxes.append(np.concatenate([cand[keep], score[keep, None], reg_np[keep]], axis=1))
            all_frames.append(fi[keep])
        if not all_boxes:
            return np.zeros((0, 5)), np.zeros(0, dtype=np.int64)
        cand = np.concatenate(all_boxes)
        frame_of_box = np.concatenate(all_frames)
        keep = batched_nms(cand[:, :4], cand[:, 4], frame_of_box, 0.7, "union")
        cand, frame_of_box = cand[keep], frame_of_box[keep]
        boxes = square(regress(cand[:, :4], cand[:, 5:9]))
        return np.concatenate([boxes, cand[:, 4:5]], axis=1), frame_of_box

    def _stage2(
        self, pyramid: OctavePyramid, boxes: np.ndarray, frame_of_box: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """R-Net refinement of candidates. Returns squared boxes ``(K, 5)`` and frame ids."""
        crops = normalise(pyramid.crops(frame_of_box, boxes[:, :4], 24))
        reg, prob = run_in_chunks(self.rnet, crops, self.RNET_CROPS)
        prob_np = prob.cpu().numpy().astype(np.float64)
        ok = prob_np > self.thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], prob_np[ok, None]], axis=1)
        reg_np = reg.cpu().numpy().astype(np.float64)[ok]
        frame_of_box = frame_of_box[ok]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], frame_of_box, 0.7, "union")
        boxes, reg_np, frame_of_box = boxes[keep], reg_np[keep], frame_of_box[keep]
        boxes[:, :4] = square(regress(boxes[:, :4], reg_np))
        return boxes, frame_of_box

    def _stage3(
        self, pyramid: OctavePyramid, boxes: np.ndarray, frame_of_box: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-Net: final score, box and 5 points. Returns boxes ``(K, 5)``, points ``(K, 5, 2)``, frame ids."""
        crops = normalise(pyramid.crops(frame_of_box, boxes[:, :4], 48))
        reg, pts, prob = run_in_chunks(self.onet, crops, self.ONET_CROPS)
        prob_np = prob.cpu().numpy().astype(np.float64)
        ok = prob_np > self.thresholds[2]
        boxes, frame_of_box = boxes[ok, :4], frame_of_box[ok]
        pts_np = pts.cpu().numpy().astype(np.float64)[ok]
        reg_np = reg.cpu().numpy().astype(np.float64)[ok]
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        points = np.stack([boxes[:, 0:1] + w * pts_np[:, :5], boxes[:, 1:2] + h * pts_np[:, 5:]], axis=2)
        boxes = np.concatenate([regress(boxes, reg_np), prob_np[ok, None]], axis=1)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], frame_of_box, 0.7, "min")
        return boxes[keep], points[keep], frame_of_box[keep]
