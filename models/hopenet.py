"""Hopenet head-pose network (ResNet-50, binned yaw/pitch/roll), our own code, loading its public checkpoint.

Ruiz, Chong, Rehg, "Fine-Grained Head Pose Estimation Without Keypoints", CVPRW 2018; our own code, laid out
so the public checkpoint ``hopenet_robust_alpha1.pkl`` loads strictly.

Facts read off the public code (GitHub ``natanielruiz/deep-head-pose``, ``code/hopenet.py``,
``code/train_hopenet.py``, ``code/test_hopenet.py``, ``code/test_on_video_dlib.py``, ``code/datasets.py``):

- Network: ``Hopenet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3], 66)``: the torchvision
  ResNet-50 layout (``conv1`` 7x7/2 no bias, ``bn1``, ReLU, 3x3/2 max-pool, ``layer1..4`` of
  Bottlenecks, ``avgpool = nn.AvgPool2d(7)``) with three heads ``fc_yaw``, ``fc_pitch``, ``fc_roll``
  = ``Linear(2048, 66)`` and a "vestigial" ``fc_finetune = Linear(2048 + 3, 3)`` that ``forward`` never
  uses but that is in the state dict. ``forward`` returns the three raw logit tensors.
- Checkpoint: ``train_hopenet.py`` saves ``torch.save(model.state_dict(), ...)`` of the bare model (no
  DataParallel), and every test script loads it with a strict ``model.load_state_dict(torch.load(path))``:
  a **plain state dict**, no ``module.`` prefix, with the ``fc_finetune`` keys.
- Angles: 66 bins of 3 degrees (labels ``np.digitize(angle, range(-99, 102, 3)) - 1``); the continuous
  prediction is ``sum(softmax(logits) * [0..65]) * 3 - 99`` degrees (see :func:`angles_from_logits`).
- Input: RGB (PIL ``convert('RGB')``) face crop; tests use ``Scale(224)`` (shorter side to 224, bilinear)
  + ``CenterCrop(224)``, training ``Scale(240)`` + ``RandomCrop(224)``; then ``ToTensor`` and ImageNet
  ``Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))``.
- Crop: a box loosely enlarged around the face. AFLW2000 test (``datasets.AFLW2000``, ``k = 0.20``) on
  the 68-landmark extent: ``x_min -= 2k·w``, ``y_min -= 2k·h``, ``x_max += 2k·w'``, ``y_max += 0.6k·h'``
  (w', h' measured after the first update, as the code updates in place), ``int()``-truncated, PIL crop.
  ``test_on_video_dlib.py`` on a dlib detector rectangle: ``x ± w/2``, ``y_min -= 3h/4``,
  ``y_max += h/4``, clipped to the frame. See :func:`landmark_crop_box` / :func:`detection_crop_box`.

Angle convention: that of the training labels (300W-LP ``Pose_Para`` pitch, yaw, roll, flipped with the
image for augmentation). It is not the PnP convention of ``pipeline.evaluation.faces.head_pose``: compare
Hopenet angles with Hopenet angles only.

Not confirmed (no checkpoint here): the public files were saved by PyTorch 0.3-era code (Python 2
``print`` statements, ``transforms.Scale``, ``loss.data[0]``), so they probably lack BatchNorm
``num_batches_tracked`` entries (added in PyTorch 0.4.1). torch's own strict load fills those in; a
pre-check that insists on every key does not. :func:`models.checkpoints.add_missing_batch_counters` adds them
(the registry entry says so: ``legacy_batchnorm``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models.weights import REGISTRY

INPUT_SIZE = 224
NUM_BINS = 66
BIN_DEGREES = 3.0
OFFSET_DEGREES = 99.0
FEATURES = 2048
RESNET50_LAYERS = (3, 4, 6, 3)


# ----------------------------------------------------------------------------------------- ResNet-50


class Bottleneck(nn.Module):
    """torchvision ResNet Bottleneck: 1x1 (planes) → 3x3 with the stride (planes) → 1x1 (4·planes), each
    followed by BN, ReLU after the first two and after the residual sum. The shortcut is
    ``downsample`` = 1x1 conv with the stride + BN when the shape changes, else the identity. ``dilation``:
    the 3x3 conv's dilation (and padding), for a trunk that trades strides for dilation (DeepLabV3).

    forward: ``(N, in_ch, H, W)`` → ``(N, 4·planes, H / stride, W / stride)`` float.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        # Registration order fixes the state_dict order: conv1, bn1, conv2, bn2, conv3, bn3, downsample.
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50Trunk(nn.Module):
    """torchvision ResNet-50 without its ``fc``: keys ``conv1``, ``bn1``, ``layer1..4`` (318 state-dict
    entries, 23,508,032 parameters).

    pool: the global pooling module (``nn.AvgPool2d(7)`` in Hopenet, ``nn.AdaptiveAvgPool2d(1)`` in
    Deep3DFaceRecon; identical for a 224 input, whose last feature map is 7x7). dilate: per layer 2-4, trade
    its stride for dilation as torchvision's ``replace_stride_with_dilation`` does (DeepLabV3: layers 3 and
    4, output stride 8): that layer's first block keeps the dilation before it, the others take the doubled
    one. width: the stem's width and layer 1's planes (64; the layers double it), smaller only for tiny test
    networks.

    ``features``: ``(N, 3, 224, 224)`` normalised image → ``(N, 2048, 1, 1)`` float.
    """

    def __init__(
        self,
        pool: nn.Module | None = None,
        dilate: tuple[bool, bool, bool] = (False, False, False),
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch, dilation = width, 1
        planes_of = (width, 2 * width, 4 * width, 8 * width)
        for i, (planes, blocks) in enumerate(zip(planes_of, RESNET50_LAYERS), start=1):
            stride = 1 if i == 1 else 2
            previous = dilation
            if i > 1 and dilate[i - 2]:
                dilation, stride = dilation * stride, 1
            stage = [Bottleneck(in_ch, planes, stride, previous)]
            in_ch = planes * Bottleneck.expansion
            stage += [Bottleneck(in_ch, planes, dilation=dilation) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
        self.avgpool = pool if pool is not None else nn.AdaptiveAvgPool2d(1)

    def reset_trunk(self) -> None:
        """Random init (pretrained checkpoints overwrite every value): convs Kaiming normal (fan-out, as
        both public codes do), BN scale 1 and shift 0, except each block's last BN whose scale starts at
        ``1 / sqrt(16 blocks)`` so a random network's eval-mode activations stay O(1)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.constant_(m.bn3.weight, 1.0 / math.sqrt(sum(RESNET50_LAYERS)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


def check_input(x: torch.Tensor, who: str) -> None:
    """ValueError unless ``x`` is ``(N, 3, 224, 224)``."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"{who} expects (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) RGB, got {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------- Hopenet


class Hopenet(ResNet50Trunk):
    """Hopenet: ResNet-50 trunk + per-angle 66-bin classifiers (the public ``Hopenet`` layout).

    forward: ``(N, 3, 224, 224) float32`` RGB, ``ToTensor`` then ImageNet-normalised
    (see :func:`preprocess`) → ``(yaw, pitch, roll)`` logits, each ``(N, 66) float32`` (no softmax).
    :func:`angles_from_logits` turns them into degrees.

    State dict: 326 entries (318 trunk + ``fc_yaw``, ``fc_pitch``, ``fc_roll``, ``fc_finetune`` weight
    and bias), 23,919,890 parameters. ``fc_finetune`` (2051 → 3) is unused, kept for strict loading.
    """

    def __init__(self, num_bins: int = NUM_BINS) -> None:
        super().__init__(pool=nn.AvgPool2d(7))
        self.fc_yaw = nn.Linear(FEATURES, num_bins)
        self.fc_pitch = nn.Linear(FEATURES, num_bins)
        self.fc_roll = nn.Linear(FEATURES, num_bins)
        self.fc_finetune = nn.Linear(FEATURES + 3, 3)
        self.reset_trunk()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_input(x, "Hopenet")
        f = torch.flatten(self.features(x), 1)
        return self.fc_yaw(f), self.fc_pitch(f), self.fc_roll(f)


def hopenet() -> Hopenet:
    """A freshly initialised Hopenet (ResNet-50, 66 bins): the layout of ``hopenet_robust_alpha1.pkl``."""
    return Hopenet(NUM_BINS)


def angles_from_logits(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees ``(N, 3) float32`` (yaw, pitch, roll) from three ``(N, 66)`` logit tensors.

    Softmax expectation of the bin index, times 3, minus 99 (the public code's formula). Bin ``i`` maps
    to ``3i - 99``: bin 0 → -99°, bin 33 → 0°, bin 65 → 96°. (The training bins are
    ``[3i - 99, 3i - 96)``, so the formula reads each bin at its lower edge; we keep it as published, since
    the network's regression loss was trained against exactly this expectation.)
    """
    out = []
    for logits in (yaw, pitch, roll):
        probs = F.softmax(logits.float(), dim=1)
        idx = torch.arange(probs.shape[1], dtype=probs.dtype, device=probs.device)
        out.append((probs * idx).sum(1) * BIN_DEGREES - OFFSET_DEGREES)
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------------------- input


def landmark_crop_box(landmarks68: np.ndarray, k: float = 0.20) -> tuple[int, int, int, int]:
    """Loose face box ``(x1, y1, x2, y2)`` ints from ``(68, 2)`` pixel landmarks, as the public
    AFLW2000 test set builds it (``datasets.AFLW2000``, k = 0.20): widened by 2k of the landmark width on
    each side, raised by 2k of the height, lowered by 0.6k, with the in-place updates and ``int()``
    truncation of the original. The box may extend past the image (the crop is zero-padded there).
    """
    lm = np.asarray(landmarks68, dtype=np.float64)
    x_min, y_min = float(lm[:, 0].min()), float(lm[:, 1].min())
    x_max, y_max = float(lm[:, 0].max()), float(lm[:, 1].max())
    x_min -= 2 * k * abs(x_max - x_min)
    y_min -= 2 * k * abs(y_max - y_min)
    x_max += 2 * k * abs(x_max - x_min)
    y_max += 0.6 * k * abs(y_max - y_min)
    return int(x_min), int(y_min), int(x_max), int(y_max)


def detection_crop_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Loose face box from a detector rectangle ``(x1, y1, x2, y2)`` as ``test_on_video_dlib.py`` builds
    it: half the box width added left and right, 3/4 of its height above, 1/4 below, clipped to the
    ``width`` x ``height`` frame. (The original used Python 2 integer division on dlib's int rectangle;
    here the arithmetic is float and truncated at the end: at most 1 px apart.)
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = abs(x2 - x1), abs(y2 - y1)
    x1, x2 = x1 - bw / 2, x2 + bw / 2
    y1, y2 = y1 - 3 * bh / 4, y2 + bh / 4
    return int(max(x1, 0)), int(max(y1, 0)), int(min(width, x2)), int(min(height, y2))


def preprocess(image: np.ndarray, crop_box: tuple[int, int, int, int]) -> torch.Tensor | None:
    """Hopenet input ``(1, 3, 224, 224) float32`` from an ``(H, W, 3) uint8`` RGB image and a crop box.

    PIL crop (zero fill outside the image), shorter side resized to 224 (PIL bilinear, the longer side
    ``int(224 · long / short)``, as ``transforms.Scale``/``Resize``), centre crop 224 (offset
    ``int(round((side - 224) / 2))``), ``/255``, ImageNet mean/std. None for an empty box.
    """
    x1, y1, x2, y2 = crop_box
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    face = Image.fromarray(np.ascontiguousarray(image)).convert("RGB").crop((x1, y1, x2, y2))
    w, h = face.size
    if w <= h:
        size = (INPUT_SIZE, int(INPUT_SIZE * h / w))
    else:
        size = (int(INPUT_SIZE * w / h), INPUT_SIZE)
    face = face.resize(size, Image.BILINEAR)
    left = int(round((size[0] - INPUT_SIZE) / 2.0))
    top = int(round((size[1] - INPUT_SIZE) / 2.0))
    face = face.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    x = torch.from_numpy(np.asarray(face, dtype=np.float32)).permute(2, 0, 1)
    return REGISTRY["hopenet"].normalisation.to_network(x).unsqueeze(0).contiguous()
