"""FaceShifter HEAR-Net (Li et al. 2019, stage 2): Heuristic Error Acknowledging Refinement Network, our code.

A U-Net on the 6-channel concatenation of the AEI-Net swap ``Ŷ(s,t)`` and the heuristic error
``ΔY(t) = X(t) - Ŷ(t,t)`` (target minus AEI-Net's reconstruction of the target with its own identity), which
shows where AEI-Net drops target content (occlusions, glasses, hands, ...). Output: the refined face.

Default (paper) layout for 256 px: 5 down levels (Conv 4x4 stride 2 + BatchNorm + LeakyReLU(0.1)) with
64-128-256-512-512 channels down to 8x8, 4 up levels (ConvTranspose 4x4 stride 2 + BatchNorm + LeakyReLU, each
concatenated with the encoder skip of the same size) and a 5th ConvTranspose to 3 channels at full size, then
tanh: 16,663,299 parameters. No public checkpoint layout is targeted (keys ``down1..5``, ``up1..4``, ``out``).

Conventions: images ``(N, 3, H, W)`` float RGB in [-1, 1] (the AEI-Net convention); ``H`` and ``W`` multiples
of ``2 ** levels`` (32); the heuristic error is in [-2, 2].
"""

from __future__ import annotations

import torch
from torch import nn

from models.aei_net import UpConcat, conv_down

TINY_HEAR_CONFIG: dict[str, int] = {"base": 8}
"""A HEAR-Net with 8-16-32-64-64 channels (262,243 parameters), for CPU training tests."""


class HEARNet(nn.Module):
    """U-Net refining the AEI-Net swap with the heuristic error.

    Args:
        base: channels of the first level (64 = paper); doubled per level up to ``max_width``.
        levels: number of stride-2 down levels (5 = paper); the input side must be a multiple of 2**levels.
        max_width: channel cap (default ``8 * base``, 512 for the paper).
    """

    def __init__(self, base: int = 64, levels: int = 5, max_width: int | None = None) -> None:
        super().__init__()
        if base < 1 or levels < 2:
            raise ValueError(f"HEARNet needs base >= 1 and levels >= 2, got {base}, {levels}")
        max_width = 8 * base if max_width is None else max_width
        self.levels = levels
        widths = [min(base * 2**k, max_width) for k in range(levels)]
        c_prev = 6
        for k, c in enumerate(widths, start=1):
            setattr(self, f"down{k}", conv_down(c_prev, c))
            c_prev = c
        for j in range(1, levels):
            skip = widths[levels - 1 - j]
            setattr(self, f"up{j}", UpConcat(c_prev, skip))
            c_prev = 2 * skip
        self.out = nn.ConvTranspose2d(c_prev, 3, kernel_size=4, stride=2, padding=1)

    @staticmethod
    def heuristic_error(target: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """ΔY(t) = X(t) - Ŷ(t,t): target ``(N, 3, H, W)`` RGB in [-1, 1] minus AEI-Net's output for
        (target, identity of the target) of the same shape → ``(N, 3, H, W)`` in [-2, 2]."""
        if target.shape != reconstruction.shape:
            raise ValueError(
                f"heuristic_error needs equal shapes, got target {tuple(target.shape)}, "
                f"reconstruction {tuple(reconstruction.shape)}"
            )
        return target - reconstruction

    def forward(self, swapped: torch.Tensor, heuristic_error: torch.Tensor) -> torch.Tensor:
        """swapped ``(N, 3, H, W)`` RGB in [-1, 1] (AEI-Net Ŷ(s,t)), heuristic_error ``(N, 3, H, W)``
        (:meth:`heuristic_error`) → refined face ``(N, 3, H, W)`` RGB in [-1, 1] (tanh)."""
        step = 2**self.levels
        if swapped.dim() != 4 or swapped.shape[1] != 3 or swapped.shape != heuristic_error.shape:
            raise ValueError(
                "HEARNet inputs must both be Nx3xHxW, got swapped "
                f"{tuple(swapped.shape)}, heuristic_error {tuple(heuristic_error.shape)}"
            )
        if swapped.shape[2] % step or swapped.shape[3] % step:
            raise ValueError(
                f"HEARNet input side must be a multiple of {step}, got {tuple(swapped.shape[2:])}"
            )
        x = torch.cat((swapped, heuristic_error), dim=1)
        feats = []
        for k in range(1, self.levels + 1):
            x = getattr(self, f"down{k}")(x)
            feats.append(x)
        for j in range(1, self.levels):
            x = getattr(self, f"up{j}")(x, feats[self.levels - 1 - j])
        return torch.tanh(self.out(x))
