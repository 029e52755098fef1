"""LPIPS perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric"), version 0.1 on a VGG16 trunk, with MaskFaceGAN's masked variant; our own code.

Files (both loaded strictly, neither ever downloaded):
- the five linear heads ship inside the PyPI package ``lpips==0.1.4`` (BSD-2-Clause) as
  ``lpips/weights/v0.1/vgg.pth``, a plain state_dict ``lin0.model.1.weight`` … ``lin4.model.1.weight``
  (shapes ``(1, C_k, 1, 1)``). The package is never imported (its ``__init__`` imports torchvision, which we
  do not install): :func:`lin_file` finds its folder with ``importlib.util.find_spec``, which runs nothing;
- the trunk is torchvision's ImageNet VGG16 ``vgg16-397923af.pth`` (registry entry ``vgg16_imagenet``,
  user-supplied in ``weights.dir``); :class:`VGG16Features` keeps torchvision's ``features.N`` keys and the
  file's ``classifier.*`` entries are dropped before the strict load.

The distance of images ``x0``, ``x1``:
1. ``normalize=True``: ``2 * x - 1`` ([0, 1] → [-1, 1]); then the scaling layer ``(x - SHIFT) / SCALE`` per
   channel (ImageNet's mean and std carried to [-1, 1]: SHIFT = 2·mean − 1, SCALE = 2·std);
2. the VGG16 taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (:data:`CHANNELS`; sides H, ⌊H/2⌋, ⌊H/4⌋, …);
3. each tap unit-normalised along channels, ``f / (sqrt(Σ_c f²) + 1e-10)``; ``diff_k = (f0_k − f1_k)²``;
4. masked (MaskFaceGAN): layer k's mask is the area resize of layer k−1's mask (not of the original) to
   layer k's size (:func:`chained_area_masks`), and ``diff_k`` is multiplied by it;
5. ``d = Σ_k mean_{h,w} lin_k(diff_k)``, a ``(N, 1, 1, 1)`` tensor; a masked distance is also averaged over
   the whole map, not divided by the mask's area.

One difference from the package, with no effect on any value: each head's index 0 is an Identity where the
package has a Dropout, which acts only in training mode; the package and MaskFaceGAN always run the metric in
eval mode, and with the Identity a parent's ``.train()`` cannot make the distance random.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoints import load_state_dict_file
from models.errors import ModelFileError
from models.runtime import check_shape
from models.weights import load_network

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 128, 256, 512, 512)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
# torchvision's vgg16 ``features``: a width is a 3x3 conv (padding 1) and a ReLU; M a 2x2 max pool
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
TAPS = (3, 8, 15, 22, 29)  # index in ``features`` of the ReLUs LPIPS reads
EPS = 1e-10
VGG_ENTRY = "vgg16_imagenet"
LIN_FILE = Path("lpips", "weights", "v0.1", "vgg.pth")  # inside site-packages
INSTALL_HINT = "install it with `pip install --no-deps lpips==0.1.4` (or run `make`); only this file is used"


class VGG16Features(nn.Module):
    """torchvision's VGG16 convolutional trunk (keys ``features.{0,2,5,…,28}.weight/bias``), returning LPIPS's
    five taps.

    Input ``(N, 3, H, W)`` float, RGB, standardised as ImageNet's (LPIPS's scaling layer); output a tuple of
    five float tensors ``(N, C_k, H_k, W_k)``, C = :data:`CHANNELS`, H_k = ⌊H / 2^k⌋ (the last pool is kept
    for the layout but never run)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taps = []
        for index, layer in enumerate(self.features[: TAPS[-1] + 1]):
            x = layer(x)  # each tap is followed by a pool, so the in-place ReLUs never overwrite one
            if index in TAPS:
                taps.append(x)
        return tuple(taps)


class LinearHead(nn.Module):
    """One LPIPS head ``lin_k``: a 1x1 convolution C_k → 1 without bias, under ``model.1`` as the package's
    file keys it (index 0: an Identity in place of the package's training-only Dropout).
    ``(N, C_k, H, W)`` → ``(N, 1, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPSHeads(nn.ModuleDict):
    """The five heads keyed ``lin0`` … ``lin4``: the layout of the package's ``vgg.pth``
    (:meth:`LPIPS.heads` returns one sharing the metric's modules, to load that file strictly)."""


def unit_normalise(f: torch.Tensor) -> torch.Tensor:
    """``f / (sqrt(Σ_c f²) + 1e-10)`` along dim 1 of ``(N, C, H, W)``; same shape and dtype."""
    return f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + EPS)


def chained_area_masks(mask: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """MaskFaceGAN's per-layer masks: ``mask`` ``(N, 1, H, W)`` area-resized to ``sizes[0]``, that result
    to ``sizes[1]``, and so on (each from the one before, not from the original; the two differ where a
    size does not divide the one before). Returns one ``(N, 1, h_k, w_k)`` tensor per size, in ``mask``'s
    dtype."""
    out = []
    for size in sizes:
        mask = F.interpolate(mask, size=tuple(size), mode="area")
        out.append(mask)
    return out


class LPIPS(nn.Module):
    """LPIPS v0.1 with a VGG16 trunk: ``net`` (:class:`VGG16Features`) and the heads ``lin0`` … ``lin4``.

    Build it loaded with :func:`load_lpips`; a bare ``LPIPS()`` is randomly initialised."""

    def __init__(self, net: VGG16Features | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else VGG16Features()
        for k, channels in enumerate(CHANNELS):
            self.add_module(f"lin{k}", LinearHead(channels))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def heads(self) -> LPIPSHeads:
        """The five heads as one module keyed like the package's ``vgg.pth`` (the modules, not copies)."""
        return LPIPSHeads({f"lin{k}": getattr(self, f"lin{k}") for k in range(len(CHANNELS))})

    def forward(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        mask: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """LPIPS distance of ``x0`` and ``x1``, ``(N, 3, H, W)`` float RGB (the module's dtype), in [0, 1]
        with ``normalize=True``, in [-1, 1] with ``normalize=False``; H, W ≥ 16 (relu5_3 is H/16).

        mask: ``(N, 1, H, W)`` (or batch 1) float in [0, 1] at the images' size: MaskFaceGAN's masked LPIPS
        (module docstring, step 4); None: the plain metric. Returns ``(N, 1, 1, 1)``, 0 for identical
        images, differentiable in both images."""
        check_shape(x0, ("N", 3, "H", "W"), "LPIPS x0", "float", "RGB")
        if x1.shape != x0.shape:
            check_shape(x1, tuple(x0.shape), "LPIPS x1 (the shape of x0)", "float", "RGB")
        if mask is not None:
            batch = 1 if mask.shape[:1] == (1,) else x0.shape[0]  # one mask for all pairs, or one each
            check_shape(mask, (batch, 1, x0.shape[2], x0.shape[3]), "LPIPS mask", "float", "in [0, 1]")
        if normalize:
            x0, x1 = 2 * x0 - 1, 2 * x1 - 1
        taps0 = self.net((x0 - self.shift) / self.scale)
        taps1 = self.net((x1 - self.shift) / self.scale)
        diffs = [(unit_normalise(f0) - unit_normalise(f1)) ** 2 for f0, f1 in zip(taps0, taps1)]
        if mask is not None:
            masks = chained_area_masks(mask, [tuple(d.shape[-2:]) for d in diffs])
            diffs = [d * m for d, m in zip(diffs, masks)]
        return sum(getattr(self, f"lin{k}")(d).mean((2, 3), keepdim=True) for k, d in enumerate(diffs))


def lin_file() -> Path:
    """Path of ``lpips/weights/v0.1/vgg.pth`` inside the installed lpips package (the package not run)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"{LIN_FILE}: LPIPS heads not found, the lpips package is not installed; {INSTALL_HINT}"
        )
    path = Path(spec.submodule_search_locations[0]).parent / LIN_FILE
    if not path.is_file():
        raise ModelFileError(f"{path}: LPIPS heads missing from the installed lpips package; {INSTALL_HINT}")
    return path


def load_lpips(weights_dir: str | Path, device: str = "cpu", expected_sha256: str | None = None) -> LPIPS:
    """LPIPS v0.1 (VGG16) ready to use: the heads from the lpips package's ``vgg.pth``, the trunk from
    ``weights_dir``'s ``vgg16-397923af.pth`` (registry ``vgg16_imagenet``; ``expected_sha256`` pins it),
    both strictly. Returns the metric in eval mode, gradients off (still differentiable in its inputs),
    float32 on ``device``. A missing file is a one-line ModelFileError naming it and what to do; a file of
    another layout a one-line WeightFileError naming the first bad key."""
    heads_path = lin_file()  # the cheap check first
    lpips = LPIPS(load_network(VGG_ENTRY, weights_dir, expected_sha256=expected_sha256))
    load_state_dict_file(lpips.heads(), heads_path)
    lpips.eval().requires_grad_(False)
    return lpips.to(device)
