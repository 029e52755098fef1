"""How RGB pixel values become a network's input and back: the normalisations the weight registry names.

A :class:`Normalisation` is ``(x / divide - mean) / std`` per channel, ``x`` the pixel values 0..255 as
floats, in the exact order of operations of the reference code that trained the network (two forms of the
same range round differently in the last bit: ``x / 127.5 - 1`` is GHOST's generator input,
``(x / 255 - 0.5) / 0.5`` its ArcFace input). A step that is the identity (mean 0, std 1) is skipped; that
changes no bit. Tensors may be any shape with the channel axis at ``channel_dim`` (RGB order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalisation:
    """``(x / divide - mean) / std`` per RGB channel; :meth:`to_pixels` is its inverse."""

    divide: float
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def _channels(self, values: tuple[float, ...], x: torch.Tensor, channel_dim: int) -> torch.Tensor | float:
        if len(set(values)) == 1:  # one number for all channels: a scalar, as the reference code writes it
            return values[0]
        shape = [1] * x.ndim
        shape[channel_dim] = 3
        return torch.tensor(values, dtype=x.dtype, device=x.device).view(shape)

    def standardise(self, x: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """``(x - mean) / std`` of values already divided by ``divide`` (e.g. RGB in [0, 1] for 255)."""
        if any(self.mean):
            x = x - self._channels(self.mean, x, channel_dim)
        if any(s != 1.0 for s in self.std):
            x = x / self._channels(self.std, x, channel_dim)
        return x

    def to_network(self, x: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """Float pixel values 0..255 (RGB along ``channel_dim``) → the network's input, same shape."""
        return self.standardise(x / self.divide, channel_dim)

    def to_pixels(self, y: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """A network's RGB output in its input's range → float pixel values (not rounded or clipped)."""
        if any(s != 1.0 for s in self.std):
            y = y * self._channels(self.std, y, channel_dim)
        if any(self.mean):
            y = y + self._channels(self.mean, y, channel_dim)
        return y * self.divide

    def describe(self) -> str:
        """The formula in words, e.g. ``RGB, x/127.5 - 1, range [-1, 1]``."""
        lo = [(0.0 - m) / s for m, s in zip(self.mean, self.std)]
        hi = [(255.0 / self.divide - m) / s for m, s in zip(self.mean, self.std)]
        text = f"x/{self.divide:g}"
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            if self.mean[0]:
                text = f"{text} - {self.mean[0]:g}"
            if self.std[0] != 1.0:
                text = f"({text}) / {self.std[0]:g}"
            return f"RGB, {text}, range [{lo[0]:g}, {hi[0]:g}]"
        return f"RGB, (x/{self.divide:g} - mean {self.mean}) / std {self.std}"


SIGNED = Normalisation(127.5, mean=(1.0, 1.0, 1.0))  # x/127.5 - 1: GHOST's AEI-Net and HEAR-Net crops
# (x/255 - 0.5) / 0.5: ArcFace, as GHOST and insightface feed it
SIGNED_FROM_UNIT = Normalisation(255.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
UNIT = Normalisation(255.0)  # x/255: Deep3DFaceRecon
IMAGENET = Normalisation(255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # torchvision's
