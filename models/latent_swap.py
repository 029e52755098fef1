"""The adaptive-latent StyleGAN2 face swap ("End-to-end Face-swapping via Adaptive Latent Representation
Learning", arXiv 2303.04186): a dual-space encoder and an adaptive latent-swap module in front of a frozen
StyleGAN2 generator (:mod:`models.stylegan2`, FFHQ weights user-supplied). No public code or weights exist;
built from the paper's description, every open choice marked *ours* (also in the README).

- :class:`DualSpaceEncoder`: one shared IR-SE trunk (e4e's layout, :class:`models.e4e.Encoder4Editing`, so
  e4e's public encoder can start it) with two heads, the paper's "multi-task dual-space" encoder: the latent
  space (W+, e4e's map-to-style blocks, plus a stored mean W ``latent_avg``) and the image space (a
  face-region mask). *Ours*: the mask head reads the feature pyramid's finest level (a quarter of the input
  side): 3x3 conv, BatchNorm, ReLU, 3x3 conv, BatchNorm, ReLU, 1x1 conv to one logit, upsampled
  bilinearly to the input's side.
- :class:`AdaptiveLatentSwap`: per W+ row l a gate ``g_l = sigmoid(MLP_l([w_s,l, w_t,l]))`` per channel, and
  ``w_l = g_l w_s,l + (1 − g_l) w_t,l``: the module learns which rows (coarse pose, middle features, fine
  colour) and channels carry identity, where earlier style-transfer swaps fix a hand-picked set of rows.
  *Ours*: each row's MLP is linear 2D → hidden, LeakyReLU 0.2, linear hidden → D; the last layer starts at
  zero, so every gate starts at one half.
- :class:`LatentSwapNet`: both, the exported network (file ``latent_swap.pth``, registry ``latent_swap``).
  The swapped face is ``G(w)``; the paper blends it into the target with the encoder's own mask of the
  target, end to end, with no external segmentation (:meth:`LatentSwapNet.blend`).

Conventions: crops ``(N, 3, S, S)`` RGB in [-1, 1], FFHQ-aligned (``align.template=ffhq``), S the encoder's
``input_size`` (the generator's output is area-resized to the crop's side by the caller when they differ);
W+ ``(N, n_latent, D)``; masks ``(N, 1, S, S)`` logits (``torch.sigmoid`` gives the blend weight in [0, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.e4e import N_STYLES, STAGES, Encoder4Editing

MASK_WIDTH = 64
GATE_HIDDEN = 256


class DualSpaceEncoder(nn.Module):
    """Crops ``(N, 3, S, S)`` in [-1, 1] → W+ ``(N, n_styles, D)`` (``latent_avg`` added) and face-region
    mask logits ``(N, 1, S, S)`` from one trunk (module docstring). Keys ``e4e.*`` (e4e's own, so its
    encoder state loads into them), ``mask_head.*``, ``latent_avg``."""

    def __init__(
        self,
        stages: tuple[tuple[int, int], ...] = STAGES,
        n_styles: int = N_STYLES,
        input_size: int = 256,
        mask_width: int = MASK_WIDTH,
    ) -> None:
        super().__init__()
        self.e4e = Encoder4Editing(stages, n_styles, input_size)
        top = int(stages[3][0])
        self.input_size = input_size
        self.mask_head = nn.Sequential(
            nn.Conv2d(top, mask_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(mask_width),
            nn.ReLU(),
            nn.Conv2d(mask_width, mask_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(mask_width),
            nn.ReLU(),
            nn.Conv2d(mask_width, 1, 1),
        )
        self.register_buffer("latent_avg", torch.zeros(n_styles, top))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        codes, finest = self.e4e.encode(x)
        mask = F.interpolate(self.mask_head(finest), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return codes + self.latent_avg, mask


class AdaptiveLatentSwap(nn.Module):
    """Source and target W+ ``(N, L, D)`` each → the swapped W+ ``(N, L, D)`` and the gates ``(N, L, D)`` in
    (0, 1) (1: the source's value). Keys ``gates.<l>.{0,2}.{weight,bias}``."""

    def __init__(self, n_latent: int = N_STYLES, dim: int = 512, hidden: int = GATE_HIDDEN) -> None:
        super().__init__()
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, dim))
            for _ in range(n_latent)
        )
        for mlp in self.gates:
            nn.init.zeros_(mlp[2].weight)
            nn.init.zeros_(mlp[2].bias)

    def forward(self, w_source: torch.Tensor, w_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates = torch.stack(
            [
                torch.sigmoid(mlp(torch.cat((w_source[:, i], w_target[:, i]), dim=1)))
                for i, mlp in enumerate(self.gates)
            ],
            dim=1,
        )
        return gates * w_source + (1.0 - gates) * w_target, gates


class LatentSwapNet(nn.Module):
    """The trained part of the swap: :class:`DualSpaceEncoder` (``encoder.*``) and
    :class:`AdaptiveLatentSwap` (``swapper.*``); the frozen generator is not part of it."""

    def __init__(self, gate_hidden: int = GATE_HIDDEN, **encoder_layout) -> None:
        super().__init__()
        self.encoder = DualSpaceEncoder(**encoder_layout)
        n_styles, dim = self.encoder.latent_avg.shape
        self.swapper = AdaptiveLatentSwap(n_styles, dim, gate_hidden)

    def forward(
        self, target: torch.Tensor, source: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target and source crops ``(N, 3, S, S)`` (encoded in one batch) → the swapped W+, the target's
        mask logits ``(N, 1, S, S)``, the gates and the source's W+ (the training step; the swap stage
        encodes its one source once and calls :attr:`encoder` and :attr:`swapper` itself)."""
        codes, masks = self.encoder(torch.cat((target, source)))
        n = len(target)
        w, gates = self.swapper(codes[n:], codes[:n])
        return w, masks[:n], gates, codes[n:]

    @staticmethod
    def blend(generated: torch.Tensor, target: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """``m G(w) + (1 − m) target`` with ``m = sigmoid(mask_logits)``; the generated face resized to the
        target's side (:func:`to_side`). All ``(N, 3, S, S)`` in [-1, 1]."""
        generated = to_side(generated, target.shape[-1])
        m = torch.sigmoid(mask_logits)
        return m * generated + (1.0 - m) * target


def to_side(images: torch.Tensor, side: int) -> torch.Tensor:
    """The generator's images ``(N, 3, R, R)`` at the crops' ``side``: area-averaged when larger, bilinear
    when smaller, unchanged when equal."""
    if images.shape[-1] == side:
        return images
    mode = "area" if images.shape[-1] > side else "bilinear"
    return F.interpolate(images, size=(side, side), mode=mode)


def latent_swap(**layout) -> LatentSwapNet:
    """The registry's factory (``layout``: keyword arguments of :class:`LatentSwapNet`, the ``latent:``
    config section's)."""
    return LatentSwapNet(**layout)
