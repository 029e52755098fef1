"""FaceShifter AEI-Net (Li et al. 2019): multi-level attribute encoder + AAD generator, our own code.

The default configuration is the paper's 256 px network in the layout of GHOST's public generator
(``AEI_Net(backbone='unet', num_blocks=2, c_id=512)``): its ``state_dict()`` has the keys, order, shapes
and dtypes of ``shared/interop/ghost_aei_unet_2blocks.tsv`` (311 entries, 184,343,381 parameters), so
GHOST's ``G_unet_2blocks.pth`` (a plain state_dict) loads with ``strict=True``. Smaller configurations
(``size``, ``base``, ``max_width``, ``num_blocks``) keep the same structure for CPU training tests.

Conventions (same as GHOST):
- target ``(N, 3, S, S)`` float RGB in [-1, 1], i.e. ``(x / 255 - 0.5) / 0.5``; ``S = size`` (256);
- identity ``(N, c_id)`` float, the raw ArcFace IResNet output (c_id = 512), NOT L2-normalised;
- swapped face ``(N, 3, S, S)`` RGB in [-1, 1] (tanh);
- attributes: ``L + 1`` maps, ``L = log2(S) - 1`` encoder levels, from the 2x2 bottleneck up to S x S.
  For S = 256: (1024,2,2), (2048,4,4), (1024,8,8), (512,16,16), (256,32,32), (128,64,64),
  (64,128,128), (64,256,256); the last is the bilinear x2 (align_corners=True) upsample of the one before.

Widths for ``base`` b and ``max_width`` m (default 32 b): encoder level k (k = 0..L-1) has
``e_k = min(b 2^k, m)`` channels; attribute map 1 has ``e_{L-1}`` channels, map j (2..L) has ``2 e_{L-j}``
(upsampled features concatenated with the encoder skip), map L+1 repeats map L; AAD block j outputs
``min(attr_j, m)`` channels (the last one 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TINY_AEI_CONFIG: dict[str, int] = {"size": 64, "base": 8, "max_width": 32}
"""A 64 px AEI-Net with 715,134 parameters (c_id stays 512), for CPU training tests."""

# --------------------------------------------------------------------------------------------- blocks


def conv_down(c_in: int, c_out: int) -> nn.Sequential:
    """Conv 4x4 stride 2 (no bias) + BatchNorm + LeakyReLU(0.1): halves H and W. Keys ``0.*``, ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UpConcat(nn.Module):
    """U-Net decoder step: ConvTranspose 4x4 stride 2 (no bias) + BatchNorm + LeakyReLU(0.1), then
    concatenation with the encoder skip, upsampled features first.

    forward: x ``(N, c_in, h, w)``, skip ``(N, c_skip, 2h, 2w)`` → ``(N, c_out + c_skip, 2h, 2w)``.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.act(self.bn(self.deconv(x))), skip), dim=1)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling with ``align_corners=True`` (GHOST's choice, kept for weight compatibility)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class AADLayer(nn.Module):
    """Adaptive Attentional Denormalization.

    ``h = IN(h_in)`` (InstanceNorm, no affine); attribute branch ``A = conv1(a) * h + conv2(a)`` (1x1 convs
    on the attribute map); identity branch ``I = fc1(z) * h + fc2(z)`` (Linear on the identity vector);
    mask ``M = sigmoid(conv_h(h))`` (1x1 conv to one channel); output ``(1 - M) * A + M * I``.

    forward: h_in ``(N, c_x, H, W)``, attr ``(N, c_attr, H, W)``, z_id ``(N, c_id)`` → ``(N, c_x, H, W)``.
    """

    def __init__(self, c_x: int, c_attr: int, c_id: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(c_x, affine=False)
        self.conv1 = nn.Conv2d(c_attr, c_x, kernel_size=1)
        self.conv2 = nn.Conv2d(c_attr, c_x, kernel_size=1)
        self.fc1 = nn.Linear(c_id, c_x)
        self.fc2 = nn.Linear(c_id, c_x)
        self.conv_h = nn.Conv2d(c_x, 1, kernel_size=1)

    def forward(self, h_in: torch.Tensor, attr: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        h = self.norm(h_in)
        a = self.conv1(attr) * h + self.conv2(attr)
        n, c = z_id.shape[0], h.shape[1]
        i = self.fc1(z_id).view(n, c, 1, 1) * h + self.fc2(z_id).view(n, c, 1, 1)
        m = torch.sigmoid(self.conv_h(h))
        return (1 - m) * a + m * i


def _aad_chain(c_in: int, c_out: int, c_attr: int, c_id: int, units: int) -> nn.Sequential:
    """``units`` x (AADLayer, ReLU, Conv 3x3 no bias); each conv keeps c_in except the last (c_in → c_out)."""
    layers: list[nn.Module] = []
    for u in range(units):
        layers += [
            AADLayer(c_in, c_attr, c_id),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out if u == units - 1 else c_in, kernel_size=3, padding=1, bias=False),
        ]
    return nn.Sequential(*layers)


def _run_chain(chain: nn.Sequential, h: torch.Tensor, attr: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
    for layer in chain:
        h = layer(h, attr, z_id) if isinstance(layer, AADLayer) else layer(h)
    return h


class AADResBlock(nn.Module):
    """AAD residual block: ``add_blocks(h) + shortcut(h)``.

    ``add_blocks`` = ``num_blocks`` x (AAD, ReLU, Conv 3x3); the shortcut is the identity when
    c_in == c_out, otherwise ``last_add_block`` = (AAD, ReLU, Conv 3x3 c_in → c_out).

    forward: h ``(N, c_in, H, W)``, attr ``(N, c_attr, H, W)``, z_id ``(N, c_id)`` → ``(N, c_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int, c_attr: int, c_id: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.add_blocks = _aad_chain(c_in, c_out, c_attr, c_id, num_blocks)
        self.last_add_block = _aad_chain(c_in, c_out, c_attr, c_id, 1) if c_in != c_out else None

    def forward(self, h: torch.Tensor, attr: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        out = _run_chain(self.add_blocks, h, attr, z_id)
        shortcut = h if self.last_add_block is None else _run_chain(self.last_add_block, h, attr, z_id)
        return out + shortcut


# --------------------------------------------------------------------------------------------- networks


class AttributeEncoder(nn.Module):
    """Multi-level attribute encoder (U-Net): ``conv1..convL`` down to 2x2, ``deconv1..deconv(L-1)`` back up.

    forward: ``(N, 3, S, S)`` RGB in [-1, 1] → tuple of L + 1 attribute maps (see the module docstring).
    """

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.levels = len(widths)
        c_prev = 3
        for k, c in enumerate(widths, start=1):
            setattr(self, f"conv{k}", conv_down(c_prev, c))
            c_prev = c
        # deconv j: previous attribute map (c_prev) → width of the skip it is concatenated with.
        for j in range(1, self.levels):
            skip = widths[self.levels - 1 - j]
            setattr(self, f"deconv{j}", UpConcat(c_prev, skip))
            c_prev = 2 * skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = []
        for k in range(1, self.levels + 1):
            x = getattr(self, f"conv{k}")(x)
            feats.append(x)
        attrs = [x]
        for j in range(1, self.levels):
            x = getattr(self, f"deconv{j}")(x, feats[self.levels - 1 - j])
            attrs.append(x)
        attrs.append(upsample2(x))
        return tuple(attrs)


class AADGenerator(nn.Module):
    """AAD generator: ``up1`` (ConvTranspose 2x2 from the identity vector to a 2x2 map), then ``AADBlk1..L+1``
    with a bilinear x2 upsample after every block but the last, then tanh.

    forward: attributes (L + 1 maps), z_id ``(N, c_id)`` → ``(N, 3, S, S)`` in [-1, 1].
    """

    def __init__(self, attr_channels: list[int], max_width: int, c_id: int, num_blocks: int) -> None:
        super().__init__()
        self.c_id = c_id
        outs = [min(c, max_width) for c in attr_channels[:-1]] + [3]
        self.up1 = nn.ConvTranspose2d(c_id, outs[0], kernel_size=2, stride=1, padding=0)
        c_prev = outs[0]
        for j, (c_attr, c_out) in enumerate(zip(attr_channels, outs), start=1):
            setattr(self, f"AADBlk{j}", AADResBlock(c_prev, c_out, c_attr, c_id, num_blocks))
            c_prev = c_out
        self.num_aad_blocks = len(outs)

    def forward(self, attrs: tuple[torch.Tensor, ...], z_id: torch.Tensor) -> torch.Tensor:
        h = self.up1(z_id.reshape(z_id.shape[0], self.c_id, 1, 1))
        for j in range(1, self.num_aad_blocks + 1):
            h = getattr(self, f"AADBlk{j}")(h, attrs[j - 1], z_id)
            if j < self.num_aad_blocks:
                h = upsample2(h)
        return torch.tanh(h)


class AEINet(nn.Module):
    """FaceShifter Adaptive Embedding Integration network (stage 1): encoder + AAD generator.

    Args:
        size: input/output side S, a power of two >= 8 (256 = GHOST/paper).
        base: encoder width of the first level (32 = GHOST); widths double per level up to ``max_width``.
        max_width: channel cap (default ``32 * base``, 1024 for GHOST).
        c_id: identity vector length (512 = ArcFace).
        num_blocks: (AAD, ReLU, Conv) units per AAD residual block (2 = GHOST "2blocks").

    ``AEINet()`` loads GHOST's ``G_unet_2blocks.pth``; ``AEINet(**TINY_AEI_CONFIG)`` (64 px, 715,134
    parameters) is for CPU training tests.
    """

    def __init__(
        self,
        size: int = 256,
        base: int = 32,
        max_width: int | None = None,
        c_id: int = 512,
        num_blocks: int = 2,
    ) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"AEINet size must be a power of two >= 8, got {size}")
        if base < 1 or num_blocks < 1 or c_id < 1:
            raise ValueError(f"AEINet needs base, c_id, num_blocks >= 1, got {base}, {c_id}, {num_blocks}")
        self.size, self.c_id = size, c_id
        max_width = 32 * base if max_width is None else max_width
        levels = int(math.log2(size)) - 1
        widths = [min(base * 2**k, max_width) for k in range(levels)]
        attr_channels = [widths[-1]] + [2 * widths[levels - 1 - j] for j in range(1, levels)]
        attr_channels.append(attr_channels[-1])
        self._attr_shapes = [(c, 2 ** (j + 1), 2 ** (j + 1)) for j, c in enumerate(attr_channels)]
        self.encoder = AttributeEncoder(widths)
        self.generator = AADGenerator(attr_channels, max_width, c_id, num_blocks)

    def attribute_shapes(self) -> list[tuple[int, int, int]]:
        """``(C, H, W)`` of each attribute map, bottleneck first."""
        return list(self._attr_shapes)

    def _check(self, name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            want = "x".join(["N", *map(str, shape)])
            raise ValueError(f"AEINet {name} must be {want}, got {'x'.join(map(str, x.shape))}")

    def get_attributes(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Attribute maps of ``x`` ``(N, 3, S, S)`` RGB in [-1, 1]: tuple of ``(N, C, H, W)`` (see above)."""
        self._check("target", x, (3, self.size, self.size))
        return self.encoder(x)

    def forward(
        self, target: torch.Tensor, id_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """target ``(N, 3, S, S)`` RGB in [-1, 1], id_embedding ``(N, c_id)`` raw ArcFace output →
        (swapped ``(N, 3, S, S)`` RGB in [-1, 1], attribute maps of the target)."""
        self._check("id_embedding", id_embedding, (self.c_id,))
        attrs = self.get_attributes(target)
        if id_embedding.shape[0] != target.shape[0]:
            raise ValueError(
                f"AEINet batch sizes differ: target {target.shape[0]}, id {id_embedding.shape[0]}"
            )
        return self.generator(attrs, id_embedding), attrs
