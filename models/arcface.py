"""ArcFace identity encoder: the IResNet backbone of insightface's arcface_torch, our own code.

Its ``state_dict()`` has the keys, order, shapes and dtypes of the public checkpoints (see
``shared/interop/arcface_iresnet100.tsv`` for GHOST's ``arcface_model/backbone.pth`` and
``arcface_iresnet50.tsv`` for arcface_torch r50), so they load with ``load_state_dict(strict=True)``.

Conventions (those the public checkpoints were trained with):
- input: ``(N, 3, 112, 112) float32`` **RGB** in [-1, 1], i.e. ``(x / 255 - 0.5) / 0.5`` of a uint8 crop
  aligned to the 112 px ArcFace template; the size is fixed by ``fc`` (512 x 512·7·7);
- output: ``(N, 512) float32`` raw embedding straight from the ``features`` BatchNorm1d, **not**
  L2-normalised (GHOST feeds it to its generator as is; normalise it yourself for cosine similarity).

Layout: stem 3x3 conv (64) → BN → PReLU; four stages of ``IBasicBlock`` (64, 128, 256, 512 channels),
each starting with stride 2 (112 → 56 → 28 → 14 → 7) and a 1x1-conv + BN shortcut; then BN2d, flatten,
dropout, ``fc`` to 512 and BatchNorm1d ``features`` whose scale is frozen at 1. Every BN has eps 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.runtime import check_shape

INPUT_SIZE = 112
EMBEDDING_DIM = 512
BN_EPS = 1e-5

IRESNET50_LAYERS = (3, 4, 14, 3)
IRESNET100_LAYERS = (3, 13, 30, 3)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: ``bn1 → conv1 3x3 → bn2 → prelu → conv2 3x3 (stride) → bn3``,
    added to the input (or to ``downsample(input)``: 1x1 conv with the stride, then BN). No activation
    after the sum.

    forward: ``(N, in_ch, H, W)`` → ``(N, out_ch, H / stride, W / stride)`` float.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        # Registration order fixes the state_dict order: bn1, conv1, bn2, prelu, conv2, bn3, downsample.
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """ArcFace IResNet identity encoder.

    layers: blocks per stage, e.g. ``(3, 13, 30, 3)`` for IResNet-100. num_features: embedding size.
    dropout: probability before ``fc`` (0 in all public checkpoints; active in train mode only).

    forward: ``(N, 3, 112, 112) float32`` RGB in [-1, 1] (``(x / 255 - 0.5) / 0.5``) →
    ``(N, num_features) float32`` raw (not L2-normalised) embedding.

    ``features.weight`` is a parameter frozen at 1 (``requires_grad=False``), as in the checkpoints;
    ``requires_grad_(True)`` on the whole model would unfreeze it.
    """

    STAGE_WIDTHS = (64, 128, 256, 512)

    def __init__(
        self, layers: Sequence[int], num_features: int = EMBEDDING_DIM, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {list(layers)}")
        self.layers_per_stage = tuple(int(n) for n in layers)
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.prelu = nn.PReLU(64)
        in_ch = 64
        for i, (width, blocks) in enumerate(zip(self.STAGE_WIDTHS, self.layers_per_stage), start=1):
            stage = [IBasicBlock(in_ch, width, stride=2)]
            stage += [IBasicBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        side = INPUT_SIZE // 16
        self.fc = nn.Linear(in_ch * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init; pretrained checkpoints overwrite every value.

        Convs: Kaiming normal (fan-in). BN: scale 1, shift 0, except each block's last BN (``bn3``), whose
        scale starts at ``1 / sqrt(total blocks)`` so the residual sum stays O(1) through the depth
        (with scale 1 a random IResNet-100's outputs reach ~1e10 in eval mode). ``features.weight`` is
        set to 1 and frozen.
        """
        branch_scale = 1.0 / math.sqrt(sum(self.layers_per_stage))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, IBasicBlock):
                nn.init.constant_(m.bn3.weight, branch_scale)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, ("N", 3, INPUT_SIZE, INPUT_SIZE), "IResNet's input", note="RGB")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet50(num_features: int = EMBEDDING_DIM, dropout: float = 0.0) -> IResNet:
    """IResNet-50 (blocks 3, 4, 14, 3; 43,590,848 parameters): arcface_torch r50 checkpoints."""
    return IResNet(IRESNET50_LAYERS, num_features, dropout)


def iresnet100(num_features: int = EMBEDDING_DIM, dropout: float = 0.0) -> IResNet:
    """IResNet-100 (blocks 3, 13, 30, 3; 65,156,160 parameters): GHOST's ``arcface_model/backbone.pth``."""
    return IResNet(IRESNET100_LAYERS, num_features, dropout)
