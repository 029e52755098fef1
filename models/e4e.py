"""e4e's encoder (Tov et al. 2021, "Designing an Encoder for StyleGAN Image Manipulation"): an IR-SE50 trunk
and 18 map-to-style blocks giving a StyleGAN2 W+ latent; our own code in the layout of
``omertov/encoder4editing``'s ``Encoder4Editing(50, 'ir_se')``, loading its weights strictly.

Checked in ``make test`` against the reference code's outputs (``shared/interop/VECTORS.md``,
``e4e_encoder``). Files: ``e4e_ffhq_encode.pt`` holds a whole pSp under ``state_dict`` with the encoder's
entries prefixed ``encoder.``; MaskFaceGAN's ``models/e4e/state.pt`` repacks them without the prefix under
``encoder_state_dict`` (the registry's ``e4e_encoder`` entry reads that one), with ``latent_avg`` beside.

Layout (keys of ``shared/interop/e4e_ir_se50_encoder.tsv``):

- ``input_layer``: 3x3 conv 3→64 (no bias), BatchNorm, PReLU.
- ``body.0..23``: IR-SE bottlenecks in four stages of 3, 4, 14 and 3 units (64, 128, 256, 512 channels), the
  first unit of each stage with stride 2. A unit is ``shortcut(x) + res(x)``: ``res`` = BatchNorm, 3x3 conv,
  PReLU, 3x3 conv (the stride), BatchNorm, squeeze-excitation (two 1x1 convs, reduction 16, no bias; ReLU,
  sigmoid); ``shortcut`` = 1x1 conv (stride) and BatchNorm where the width changes, else a 1x1 max pool of
  that stride.
- ``styles.0..17``: stride-2 3x3 convs (with bias, LeakyReLU 0.01) down to 1x1 (4, 5, 6 of them for rows 0-2,
  3-6, 7-17, from 16, 32, 64 px maps), then an equalised-lr linear 512→512.
- ``latlayer1`` (1x1, 256→512), ``latlayer2`` (1x1, 128→512): the feature pyramid's lateral links.

Forward: ``(N, 3, 256, 256)`` RGB in [-1, 1] → W+ offsets ``(N, 18, 512)``: row 0 is ``styles[0]`` of the
last stage's 16x16 map, copied to every row; rows 1-2 add their block on that map, rows 3-6 on the 32x32
pyramid level (the 16x16 map upsampled bilinearly, ``align_corners=True``, plus ``latlayer1`` of unit 20's
output), rows 7-17 on the 64x64 level (that upsampled plus ``latlayer2`` of unit 6's output). The generator's
``latent_avg`` is **not** added (the caller adds it, as pSp and MaskFaceGAN do).

Other layouts (``Encoder4Editing(stages, n_styles, input_size)``, for the tests' tiny encoders): the same
wiring with the given (width, units) stages, the style width the last stage's, taps at the last unit of
stages 2-4, and the three pyramid levels at ``input_size`` / 16, / 8 and / 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.stylegan2 import EqualLinear

STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))  # (width, units) of IR-SE50
N_STYLES = 18
COARSE, MIDDLE = 3, 7  # rows from the 16x16 map: 0-2; from 32x32: 3-6; from 64x64: 7-17


class SqueezeExcite(nn.Module):
    """Channel gates: global average, 1x1 conv down by ``reduction``, ReLU, 1x1 conv up, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit (module docstring); keys ``res_layer.{0..5}`` and, when the width changes,
    ``shortcut_layer.{0,1}``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_in == c_out:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            SqueezeExcite(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_layer(x) + self.res_layer(x)


class GradualStyleBlock(nn.Module):
    """A feature map ``(N, 512, s, s)`` → one style row ``(N, 512)``: log2(s) stride-2 3x3 convs with
    LeakyReLU 0.01, then an equalised-lr linear layer."""

    def __init__(self, channels: int, spatial: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, channels)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).view(-1, self.channels))


class Encoder4Editing(nn.Module):
    """e4e's encoder (module docstring): ``(N, 3, 256, 256)`` RGB in [-1, 1] → ``(N, 18, 512)`` W+ offsets."""

    def __init__(
        self, stages: tuple[tuple[int, int], ...] = STAGES, n_styles: int = N_STYLES, input_size: int = 256
    ) -> None:
        super().__init__()
        if len(stages) != 4 or n_styles <= MIDDLE:
            raise ValueError(f"e4e needs four trunk stages and more than {MIDDLE} styles")
        self.input_size, self.n_styles = input_size, n_styles
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, stages[0][0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(stages[0][0]),
            nn.PReLU(stages[0][0]),
        )
        units: list[nn.Module] = []
        c_in = stages[0][0]
        for width, count in stages:
            units.append(BottleneckIRSE(c_in, width, 2))
            units += [BottleneckIRSE(width, width, 1) for _ in range(count - 1)]
            c_in = width
        self.body = nn.Sequential(*units)
        ends = [sum(count for _, count in stages[: k + 1]) - 1 for k in range(4)]
        self.taps = (ends[1], ends[2], ends[3])  # the last unit of stages 2, 3 and 4 (6, 20, 23 in IR-SE50)
        width = stages[3][0]
        spatial = (input_size // 16, input_size // 8, input_size // 4)  # 16, 32, 64 at 256 px
        self.styles = nn.ModuleList(
            GradualStyleBlock(width, spatial[0] if i < COARSE else spatial[1] if i < MIDDLE else spatial[2])
            for i in range(n_styles)
        )
        self.latlayer1 = nn.Conv2d(stages[2][0], width, 1)
        self.latlayer2 = nn.Conv2d(stages[1][0], width, 1)

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W+ offsets ``(N, n_styles, D)`` and the pyramid's finest level ``(N, D, S/4, S/4)`` (the map rows
        7 and on are read from; other networks build on it, e.g. a mask head)."""
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                taps[i] = x
        c1, c2, c3 = (taps[i] for i in self.taps)
        w0 = self.styles[0](c3)
        rows = [w0]
        p2 = self._upsample_add(c3, self.latlayer1(c2))
        p3 = self._upsample_add(p2, self.latlayer2(c1))
        for i in range(1, self.n_styles):
            features = c3 if i < COARSE else p2 if i < MIDDLE else p3
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1), p3


def e4e_encoder(**layout) -> Encoder4Editing:
    """The registry's factory: e4e's FFHQ encoder (18 rows for the 1024 px generator); ``layout``
    (keyword arguments of :class:`Encoder4Editing`) builds a smaller one, e.g. the tests' tiny one."""
    return Encoder4Editing(**layout)


def latent_avg_of(path, n_latent: int = N_STYLES) -> torch.Tensor:
    """The generator's ``latent_avg`` stored beside the encoder in an e4e file (``path``; MaskFaceGAN's
    ``state.pt`` keeps it under ``latent_avg``), as ``(n_latent, 512)`` float32 (a stored ``(512,)`` or
    ``(1, 512)`` row is repeated). WeightFileError naming the file when it is missing or misshapen."""
    from models.errors import WeightFileError

    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    avg = obj.get("latent_avg") if isinstance(obj, dict) else None
    if not isinstance(avg, torch.Tensor):
        raise WeightFileError(
            f"{path}: no latent_avg entry beside the encoder; use MaskFaceGAN's e4e state.pt"
        )
    avg = avg.float().reshape(-1, avg.shape[-1])
    if avg.shape[0] == 1:
        avg = avg.expand(n_latent, -1)
    if avg.shape[0] != n_latent:
        raise WeightFileError(f"{path}: latent_avg has {avg.shape[0]} rows, the generator takes {n_latent}")
    return avg.clone()
