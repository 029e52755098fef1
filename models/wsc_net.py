"""WSC-swap's generator (Ren et al., "Reinforced Disentanglement for Face Swapping without Skip Connection",
ICCV 2023, arXiv 2307.07928), our own code from the paper's description: no public code or weights exist.

What the paper fixes: no long skip connections from the target's encoder to the generator (shallow
features of the target's face carry its identity into the swap); two target encoders instead of one, a
pixel-level one for the non-facial region (background, hair) and a semantic one for the non-identity
attributes of the face (pose, expression, lighting); the source identity from ArcFace; an adversarial
identity-removal loss on the attribute code and a 3DMM non-identity loss (the training recipe,
:mod:`pipeline.training.recipes.wsc`).

What it leaves open, or what we could not read, and what we chose (also in the README):

- **Region split.** ``region`` ``(N, 1, S, S)`` in [0, 1] is the face (1 inside the target's landmark hull,
  :func:`stages.mask_geometry.face_region_masks`, or a face parser's skin-to-lips classes). The semantic
  encoder sees ``x * region`` and ``region``; the pixel encoder sees ``x * (1 - region)`` and
  ``1 - region``. Neither sees the other's pixels.
- **Semantic encoder.** A 3x3 stem, then stride-2 steps (4x4 conv, InstanceNorm, LeakyReLU 0.2) from S down
  to ``code_size``, widths ``min(base 2^k, max_width)``, then a 1x1 conv to ``code_channels``: the
  attribute code ``(N, code_channels, code_size, code_size)`` (8x8 at 256 px: coarse enough to hold pose,
  expression and light, not the face's detail). It is the only path from the target's face pixels to
  the output.
- **Pixel encoder.** Two 3x3 convs at S, then two stride-2 steps: maps at S, S/2 and S/4 (widths base,
  2 base, 4 base). They enter the decoder at those resolutions (concatenated after the upsampling). Its
  input has the face blanked, so what it passes is background, hair and neck detail: not a skip of the
  target's face, which is what the paper removes.
- **Identity injection.** Every decoder conv is a StyleGAN2 modulated 3x3 conv (weight modulation and
  demodulation) whose style is an affine map (bias 1) of the L2-normalised ArcFace embedding; one affine per
  conv. The decoder starts with a modulated conv on the code at ``code_size``, then x2 steps (bilinear
  upsampling, two modulated convs, LeakyReLU 0.2) to S, widths ``min(base S / r, max_width)`` at
  resolution r; a 1x1 conv and tanh give RGB.
- **Identity-removal adversary** (:class:`IdentityProbe`, training only): an MLP over the flattened code
  predicting the target's identity embedding; trained to pick each code's identity among the batch's, the
  encoder trained to leave it at chance (the recipe).
- **Size.** :data:`WSC_CONFIG` (256 px, base 48, max width 512, an 8x8x256 code): 29.5 GMAC per face,
  about AEI-Net's 31.0 at 256 px (counted with ``torch.utils.flop_counter``), in 22.0 M parameters against
  AEI-Net's 184 M (whose 1024- and 2048-channel bottleneck convs hold most of them);
  :data:`TINY_WSC_CONFIG` (64 px, 0.46 M) for CPU tests.

Conventions: target ``(N, 3, S, S)`` float RGB in [-1, 1] (``x / 127.5 - 1``, as AEI-Net); region
``(N, 1, S, S)`` float in [0, 1]; identity ``(N, c_id)`` raw ArcFace output (normalised inside); output
``(N, 3, S, S)`` RGB in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.stylegan2 import grouped_conv2d, modulated_weight

WSC_CONFIG: dict[str, int] = {"size": 256, "base": 48, "max_width": 512, "code_size": 8, "code_channels": 256}
"""The full layout, the one ``configs/default.yaml``'s ``wsc:`` section names."""

TINY_WSC_CONFIG: dict[str, int] = {
    "size": 64,
    "base": 8,
    "max_width": 64,
    "code_size": 4,
    "code_channels": 32,
}
"""A 64 px layout for CPU training tests (``configs/train_tiny.yaml``)."""

LAYOUT_KEYS = tuple(WSC_CONFIG)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    """4x4 stride-2 conv, InstanceNorm (affine), LeakyReLU 0.2: halves H and W."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.LeakyReLU(0.2),
    )


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution (:func:`models.stylegan2.modulated_weight`): the weight scaled per
    input channel by a style from the identity, then demodulated (each output filter to unit norm), one
    grouped conv for the batch; plus a bias. Plain init, not StyleGAN2's equalised learning rate.

    forward: x ``(N, c_in, H, W)``, identity ``(N, c_id)`` (L2-normalised) → ``(N, c_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int, c_id: int, kernel: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(c_out, c_in, kernel, kernel) / math.sqrt(c_in * kernel * kernel)
        )
        self.style = nn.Linear(c_id, c_in)
        nn.init.normal_(self.style.weight, std=1.0 / math.sqrt(c_id))
        nn.init.ones_(self.style.bias)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        weight = modulated_weight(self.weight, self.style(identity))  # (N, c_out, c_in, k, k)
        return grouped_conv2d(x, weight, self.padding) + self.bias[None, :, None, None]


class DecoderBlock(nn.Module):
    """x2 bilinear upsampling, optional concatenation of the pixel encoder's map, two modulated 3x3 convs
    with LeakyReLU 0.2. forward: x ``(N, c_in, h, w)``, identity ``(N, c_id)``, extra ``(N, c_extra, 2h,
    2w)`` or None → ``(N, c_out, 2h, 2w)``."""

    def __init__(self, c_in: int, c_extra: int, c_out: int, c_id: int) -> None:
        super().__init__()
        self.conv1 = ModulatedConv2d(c_in + c_extra, c_out, c_id)
        self.conv2 = ModulatedConv2d(c_out, c_out, c_id)

    def forward(self, x: torch.Tensor, identity: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if extra is not None:
            x = torch.cat((x, extra), dim=1)
        return _lrelu(self.conv2(_lrelu(self.conv1(x, identity)), identity))


class SemanticEncoder(nn.Module):
    """The face region's non-identity attributes: ``(N, 4, S, S)`` (RGB times region, region) → the code
    ``(N, code_channels, code_size, code_size)``."""

    def __init__(self, size: int, base: int, max_width: int, code_size: int, code_channels: int) -> None:
        super().__init__()
        steps = int(round(math.log2(size // code_size)))
        widths = [min(base * 2**k, max_width) for k in range(steps + 1)]
        self.stem = nn.Sequential(nn.Conv2d(4, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.downs = nn.Sequential(*[_down(widths[k], widths[k + 1]) for k in range(steps)])
        self.to_code = nn.Conv2d(widths[-1], code_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.downs(self.stem(x)))


class PixelEncoder(nn.Module):
    """The non-facial region's pixels: ``(N, 4, S, S)`` (RGB times (1 - region), 1 - region) → maps at S,
    S/2, S/4 of ``base``, ``2 base``, ``4 base`` channels (finest first)."""

    def __init__(self, base: int) -> None:
        super().__init__()
        self.full = nn.Sequential(
            nn.Conv2d(4, base, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(base, base, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.down1 = _down(base, 2 * base)
        self.down2 = _down(2 * base, 4 * base)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        full = self.full(x)
        half = self.down1(full)
        return [full, half, self.down2(half)]


class WSCGenerator(nn.Module):
    """WSC-swap's generator (module docstring): two target encoders, no skip connections, identity by
    modulation. forward(target, region, identity) → (swapped ``(N, 3, S, S)`` in [-1, 1], the code)."""

    def __init__(
        self,
        size: int = WSC_CONFIG["size"],
        base: int = WSC_CONFIG["base"],
        max_width: int = WSC_CONFIG["max_width"],
        code_size: int = WSC_CONFIG["code_size"],
        code_channels: int = WSC_CONFIG["code_channels"],
        c_id: int = 512,
    ) -> None:
        super().__init__()
        if size & (size - 1) or code_size & (code_size - 1) or 8 * code_size > size:
            raise ValueError(
                f"WSCGenerator: size {size} and code_size {code_size} must be powers of two, "
                "8x apart at least"
            )
        self.size, self.code_size = size, code_size
        self.semantic = SemanticEncoder(size, base, max_width, code_size, code_channels)
        self.pixel = PixelEncoder(base)

        def width(resolution: int) -> int:
            return min(base * size // resolution, max_width)

        self.start = ModulatedConv2d(code_channels, width(code_size), c_id)
        pixel_widths = {size: base, size // 2: 2 * base, size // 4: 4 * base}
        blocks, r = [], code_size
        while r < size:
            r *= 2
            blocks.append(DecoderBlock(width(r // 2), pixel_widths.get(r, 0), width(r), c_id))
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(width(size), 3, 1)

    def encode(self, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """The attribute code ``(N, code_channels, code_size, code_size)`` of the target's face region."""
        return self.semantic(torch.cat((target * region, region), dim=1))

    def forward(
        self, target: torch.Tensor, region: torch.Tensor, identity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encode(target, region)
        outside = 1.0 - region
        pixels = {p.shape[-1]: p for p in self.pixel(torch.cat((target * outside, outside), dim=1))}
        z = F.normalize(identity.float(), dim=1).to(target.dtype)
        x = _lrelu(self.start(code, z))
        for block in self.blocks:
            x = block(x, z, pixels.get(x.shape[-1] * 2))
        return torch.tanh(self.to_rgb(x)), code


class IdentityProbe(nn.Module):
    """The identity-removal adversary: predicts the target's identity embedding ``(N, c_id)`` from the
    attribute code ``(N, C, s, s)`` (flattened, so where things are counts), two linear layers."""

    def __init__(self, code_channels: int, code_size: int, c_id: int = 512, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(code_channels * code_size * code_size, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, c_id),
        )

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code)


def wsc_generator(**layout: int) -> WSCGenerator:
    """The registry's factory: :class:`WSCGenerator` of ``layout`` (keys of :data:`WSC_CONFIG`; the
    ``wsc:`` config section), the full layout by default."""
    return WSCGenerator(**{**WSC_CONFIG, **{k: int(v) for k, v in layout.items() if k in LAYOUT_KEYS}})
