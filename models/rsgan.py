"""RSGAN (Natsume, Yatagawa, Morishima 2018, arXiv 1804.03447): face and hair in separate latent spaces. No
public code or weights exist; built from the paper's description, every open choice marked *ours* (also in
the README).

- :class:`RegionEncoder` (two of them, ``enc_face`` and ``enc_hair``): a variational encoder of one region of
  the crop (the face region, or the hair with the rest of the head and the background: the crop times the
  region mask, the rest zero) to the mean and log-variance of its latent ``(N, z_dim)`` each.
- :class:`RegionDecoder` (``dec_face``, ``dec_hair``): each VAE's decoder, rebuilding its own region from its
  latent (the per-region reconstruction the paper trains the VAEs with).
- :class:`RSGANGenerator`: the whole image from both latents and the attribute vector ``(N, n_attr)``
  (``n_attr`` 0: no attributes).
- :class:`RSGANDiscriminator`: real/fake logit and attribute logits from one trunk.
- :class:`RSGAN`: the five generative networks, the exported file (``rsgan.pth``, registry ``rsgan``).

*Ours* (the layouts are not known to us): DCGAN-like stacks. An encoder is stride-2 4x4 convolutions from
``base`` channels doubling to ``8 base`` (capped) down to 4x4, BatchNorm (not on the first) and LeakyReLU
0.2, then two linear heads; a decoder and the generator mirror it with nearest upsampling and 3x3
convolutions, BatchNorm and ReLU, ending in tanh; the discriminator is the encoder's trunk with spectral
norm in place of BatchNorm and two linear heads. 128 px as the paper; ``size`` 64 for tiny runs and 256 as
an option.

Conventions: crops ``(N, 3, S, S)`` RGB in [-1, 1]; region masks ``(N, 1, S, S)`` in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

Z_DIM = 256
# CelebA's 40 attributes in the order of its list_attr_celeba.txt header (alphabetical): the attribute
# vector's order when a model has attributes (n_attr 40).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip


def _widths(size: int, base: int) -> list[int]:
    """Channel widths from ``size`` down to 4 px: ``base`` doubling, capped at ``8 base``."""
    steps = int(math.log2(size)) - 2
    if size < 16 or 2 ** (steps + 2) != size:
        raise ValueError(f"RSGAN size must be a power of two >= 16, got {size}")
    return [min(base * 2**i, 8 * base) for i in range(steps)]


class _DownTrunk(nn.Sequential):
    """Stride-2 4x4 convolutions ``size`` → 4 px; ``norm``: BatchNorm after all but the first, or spectral
    norm on every convolution (the discriminator)."""

    def __init__(self, size: int, base: int, spectral: bool = False) -> None:
        layers: list[nn.Module] = []
        c_in = 3
        for i, width in enumerate(_widths(size, base)):
            conv = nn.Conv2d(c_in, width, 4, 2, 1)
            layers.append(nn.utils.spectral_norm(conv) if spectral else conv)
            if i > 0 and not spectral:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            c_in = width
        super().__init__(*layers)
        self.out_features = c_in * 16


class _UpStack(nn.Module):
    """A vector ``(N, in_dim)`` → ``(N, 3, size, size)`` in [-1, 1]: linear to 4x4, then nearest upsampling
    and 3x3 convolutions (BatchNorm, ReLU) to ``size``, a 3x3 convolution to RGB and tanh."""

    def __init__(self, in_dim: int, size: int, base: int) -> None:
        super().__init__()
        widths = list(reversed(_widths(size, base)))
        self.first = widths[0]
        self.fc = nn.Linear(in_dim, widths[0] * 16)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU()]
        c_in = widths[0]
        for width in [*widths[1:], widths[-1]]:
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            c_in = width
        layers += [nn.Conv2d(c_in, 3, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(v).view(-1, self.first, 4, 4))


class RegionEncoder(nn.Module):
    """A masked crop ``(N, 3, S, S)`` → ``(mu, logvar)``, each ``(N, z_dim)``."""

    def __init__(self, size: int = 128, base: int = 64, z_dim: int = Z_DIM) -> None:
        super().__init__()
        self.trunk = _DownTrunk(size, base)
        self.mu = nn.Linear(self.trunk.out_features, z_dim)
        self.logvar = nn.Linear(self.trunk.out_features, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x).flatten(1)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)


class RegionDecoder(_UpStack):
    """A region's latent ``(N, z_dim)`` → that region of the crop ``(N, 3, S, S)`` in [-1, 1]."""

    def __init__(self, size: int = 128, base: int = 64, z_dim: int = Z_DIM) -> None:
        super().__init__(z_dim, size, base)


class RSGANGenerator(_UpStack):
    """``[z_face, z_hair, attributes]`` ``(N, 2 z_dim + n_attr)`` → the whole crop ``(N, 3, S, S)``."""

    def __init__(self, size: int = 128, base: int = 64, z_dim: int = Z_DIM, n_attr: int = 0) -> None:
        super().__init__(2 * z_dim + n_attr, size, base)


class RSGANDiscriminator(nn.Module):
    """A crop ``(N, 3, S, S)`` → real/fake logit ``(N,)`` and attribute logits ``(N, n_attr)``."""

    def __init__(self, size: int = 128, base: int = 64, n_attr: int = 0) -> None:
        super().__init__()
        self.trunk = _DownTrunk(size, base, spectral=True)
        self.real = nn.Linear(self.trunk.out_features, 1)
        self.attributes = nn.Linear(self.trunk.out_features, n_attr) if n_attr else None
        self.n_attr = n_attr

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x).flatten(1)
        attr = self.attributes(h) if self.attributes is not None else h.new_zeros(len(x), 0)
        return self.real(h)[:, 0], attr


class RSGAN(nn.Module):
    """Both region VAEs and the generator (keys ``enc_face``, ``enc_hair``, ``dec_face``, ``dec_hair``,
    ``generator``). ``n_attr``: the attribute vector's length (0: none)."""

    def __init__(self, size: int = 128, base: int = 64, z_dim: int = Z_DIM, n_attr: int = 0) -> None:
        super().__init__()
        self.size, self.z_dim, self.n_attr = size, z_dim, n_attr
        self.enc_face = RegionEncoder(size, base, z_dim)
        self.enc_hair = RegionEncoder(size, base, z_dim)
        self.dec_face = RegionDecoder(size, base, z_dim)
        self.dec_hair = RegionDecoder(size, base, z_dim)
        self.generator = RSGANGenerator(size, base, z_dim, n_attr)

    def encode(self, x: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Crops ``(N, 3, S, S)`` and their face-region masks ``(N, 1, S, S)`` → ``(mu_face, logvar_face,
        mu_hair, logvar_hair)``: the face region is ``x · face``, the hair region ``x · (1 − face)``."""
        return (*self.enc_face(x * face), *self.enc_hair(x * (1.0 - face)))

    def forward(
        self, x: torch.Tensor, face: torch.Tensor, attributes: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The training forward (one call, so DistributedDataParallel sees it): crops and face masks → the
        VAEs' statistics (``mu_f``, ``lv_f``, ``mu_h``, ``lv_h``), both regions rebuilt from drawn latents
        (``rec_face``, ``rec_hair``), the whole crop rebuilt (``whole``) and the batch's faces swapped
        (``swapped``: each crop's hair latent with the face latent of the crop before it), both with the
        crops' own ``attributes`` ``(N, n_attr)`` in [0, 1] (None: none)."""
        mu_f, lv_f, mu_h, lv_h = self.encode(x, face)
        z_f, z_h = reparameterise(mu_f, lv_f), reparameterise(mu_h, lv_h)
        return {
            "mu_f": mu_f,
            "lv_f": lv_f,
            "mu_h": mu_h,
            "lv_h": lv_h,
            "rec_face": self.dec_face(z_f),
            "rec_hair": self.dec_hair(z_h),
            "whole": self.generate(z_f, z_h, attributes),
            "swapped": self.generate(torch.roll(z_f, 1, dims=0), z_h, attributes),
        }

    def generate(self, z_face: torch.Tensor, z_hair: torch.Tensor, attributes: torch.Tensor | None = None):
        """The whole crop from both latents ``(N, z_dim)`` and the attributes ``(N, n_attr)`` in [0, 1]
        (None: none, or 0.5 each when the model has attributes)."""
        if attributes is None:
            attributes = z_face.new_full((len(z_face), self.n_attr), 0.5)
        return self.generator(torch.cat((z_face, z_hair, attributes), dim=1))


def rsgan(**layout) -> RSGAN:
    """The registry's factory (``layout``: the ``rsgan.layout`` config section)."""
    return RSGAN(**layout)


def rsgan_discriminator(
    size: int = 128, base: int = 64, z_dim: int = Z_DIM, n_attr: int = 0
) -> RSGANDiscriminator:
    """The registry's factory for the exported discriminator (its attribute head estimates an image's
    attributes for editing); takes the generator's layout (``z_dim`` unused)."""
    return RSGANDiscriminator(size, base, n_attr)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """A draw of ``N(mu, exp(logvar))`` that gradients pass through."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, σ²) ‖ N(0, 1)), summed over the latent and averaged over the batch (a scalar)."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
