"""Multi-scale PatchGAN discriminator for FaceShifter (AEI-Net) training, pix2pixHD style, our own code.

Input: ``(N, in_ch, H, W) float32`` images in the generator's range, [-1, 1] RGB for AEI-Net. Output:
one map of raw patch logits ``(N, 1, h, w)`` per scale (no sigmoid), full resolution first; each further
scale sees the previous input average-pooled by 2 (3x3 window, stride 2, padding 1, padding excluded
from the average).

Per-scale net (``NLayerDiscriminator``): 4x4 convs with padding 2, ``n_layers`` of them with stride 2
(the first without normalisation), one more with stride 1, then a stride-1 conv to 1 channel. Widths
``ndf, 2 ndf, 4 ndf, ...`` capped at ``max_ch``; LeakyReLU 0.2. A stride-2 conv maps a side ``s`` to
``s // 2 + 1`` and a stride-1 conv to ``s + 1``, so 256 px with 6 layers gives 7x7 patches, 64 px with
3 layers gives 11x11.

Losses are hinge losses on the raw logits (``d_hinge_loss``, ``g_hinge_loss``): each scale's map is
averaged over its patches and batch, and the scales are summed (as pix2pixHD and GHOST sum per-scale
GAN losses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]

KERNEL = 4
PADDING = 2
LEAK = 0.2


def patch_side(side: int, n_layers: int) -> int:
    """Side of the logit map an ``NLayerDiscriminator`` with ``n_layers`` gives for an input side ``side``."""
    for _ in range(n_layers):
        side = side // 2 + 1
    return side + 2


class NLayerDiscriminator(nn.Module):
    """One-scale PatchGAN.

    in_ch: input channels. ndf: width of the first conv. n_layers: stride-2 convs (>= 1). norm: factory
    ``norm(channels) -> nn.Module`` applied after every conv but the first and the last (default
    ``InstanceNorm2d`` without affine parameters). max_ch: width cap.

    forward: ``(N, in_ch, H, W) float`` → ``(N, 1, h, w) float`` raw logits, ``h = patch_side(H, n_layers)``.
    """

    def __init__(
        self,
        in_ch: int = 3,
        ndf: int = 64,
        n_layers: int = 6,
        norm: NormFactory = nn.InstanceNorm2d,
        max_ch: int = 512,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, ndf, KERNEL, stride=2, padding=PADDING),
            nn.LeakyReLU(LEAK, inplace=True),
        ]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = min(ndf * 2**i, max_ch)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(ch, out, KERNEL, stride=stride, padding=PADDING),
                norm(out),
                nn.LeakyReLU(LEAK, inplace=True),
            ]
            ch = out
        layers.append(nn.Conv2d(ch, 1, KERNEL, stride=1, padding=PADDING))
        self.model = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convs: normal(0, 0.02) weights, zero bias (the DCGAN / pix2pixHD init).

        Affine norms: scale 1, shift 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
            elif getattr(m, "affine", False):  # BatchNorm / InstanceNorm / GroupNorm with parameters
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiscaleDiscriminator(nn.Module):
    """``num_d`` PatchGANs of the same shape on the image at scales 1, 1/2, 1/4, ...

    ``scales[0]`` sees the full-resolution input. Arguments as ``NLayerDiscriminator``.

    forward: ``(N, in_ch, H, W) float`` in [-1, 1] → list of ``num_d`` raw logit maps, ``[i]`` of shape
    ``(N, 1, patch_side(H_i, n_layers), ...)`` with ``H_0 = H`` and ``H_{i+1} = ceil(H_i / 2)``.
    """

    def __init__(
        self,
        in_ch: int = 3,
        ndf: int = 64,
        n_layers: int = 6,
        num_d: int = 3,
        norm: NormFactory = nn.InstanceNorm2d,
        max_ch: int = 512,
    ) -> None:
        super().__init__()
        if num_d < 1:
            raise ValueError(f"num_d must be >= 1, got {num_d}")
        self.scales = nn.ModuleList(
            NLayerDiscriminator(in_ch, ndf, n_layers, norm, max_ch) for _ in range(num_d)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, net in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x))
        return out


def d_hinge_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss: sum over scales of ``mean(relu(1 - real)) + mean(relu(1 + fake))``.

    0 once every real patch scores >= 1 and every fake patch <= -1. Pass fake logits computed on the
    detached generator output. Returns a scalar tensor.
    """
    if len(real_logits) != len(fake_logits) or not real_logits:
        raise ValueError(
            f"need the same non-zero number of scales, got {len(real_logits)} and {len(fake_logits)}"
        )
    return sum(
        (F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for r, f in zip(real_logits, fake_logits)),
        start=torch.zeros((), device=real_logits[0].device),
    )


def g_hinge_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Generator adversarial hinge loss: sum over scales of ``-mean(fake)``. Returns a scalar tensor."""
    if not fake_logits:
        raise ValueError("need at least one scale")
    return sum((-f.mean() for f in fake_logits), start=torch.zeros((), device=fake_logits[0].device))
