"""StyleGAN2's generator (Karras et al. 2020) in the layout of rosinality's ``stylegan2-pytorch``
``Generator``: our own code, pure torch (no CUDA extension), loading that code's checkpoints strictly.

The public FFHQ file (``stylegan2-ffhq-config-f.pt``, converted from NVIDIA's by rosinality's
``convert_weight.py``) holds ``{"g_ema": state_dict, "g": ..., "d": ..., "latent_avg": ...}``; the generator
used for editing is ``g_ema`` (``shared/interop/stylegan2_ffhq_1024_g_ema.tsv``: its keys, shapes and dtypes).
Checked in ``make test`` against the reference code's outputs on the recipe's weights
(``shared/interop/VECTORS.md``: ``stylegan2_1024`` and ``stylegan2_256``).

Layout (``size`` S, ``style_dim`` 512, ``n_mlp`` 8, channel multiplier 2, blur kernel (1, 3, 3, 1);
``max_channels`` caps every width, 512 = none, smaller only for the tests' tiny generators):

- ``style``: PixelNorm, then ``n_mlp`` equalised-lr linear layers (learning-rate multiplier 0.01) with the
  fused leaky ReLU (slope 0.2, gain √2); keys ``style.1`` .. ``style.8``.
- ``input.input`` ``(1, 512, 4, 4)``; ``conv1`` (StyledConv 3x3 at 4 px), ``to_rgb1``.
- per resolution 8 .. S: ``convs.2k`` (modulated 3x3 transposed conv, stride 2, then the 4x4 blur),
  ``convs.2k+1`` (modulated 3x3 conv) and ``to_rgbs.k`` (modulated 1x1 conv, not demodulated, plus the
  upsampled skip of the previous RGB). Widths 512 up to 32 px, then 512, 256, 128, 64, 32 at 64 .. 1024.
- ``noises.noise_i`` ``(1, 1, r, r)``: the fixed noise of ``randomize_noise=False``; each StyledConv adds
  ``noise.weight`` times its noise, then the fused leaky ReLU with its own bias (``activate.bias``).
- Equalised learning rate: every weight is stored unscaled and multiplied at run time, convolutions by
  ``1/√(in k²)``, linear layers by ``lr_mul/√in`` (their biases by ``lr_mul``), as the reference does.

Latents: ``n_latent = 2 log2(S) - 2`` (18 at 1024, 14 at 256). :meth:`Generator.forward` takes ``z``
``(N, 512)`` (mapped) or W/W+ latents ``(N, 512)`` / ``(N, n_latent, 512)`` and returns ``(N, 3, S, S)`` RGB,
nominally in [-1, 1] (not clamped).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)
LRELU_GAIN = math.sqrt(2.0)


def channel_widths(channel_multiplier: int = 2) -> dict[int, int]:
    """Feature width per resolution (rosinality's ``channels`` table)."""
    m = channel_multiplier
    return {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * m,
        128: 128 * m,
        256: 64 * m,
        512: 32 * m,
        1024: 16 * m,
    }


def blur_kernel_2d(taps: tuple[float, ...] = BLUR_KERNEL, gain: float = 1.0) -> torch.Tensor:
    """The separable FIR kernel ``outer(k, k) / sum(k)^2 * gain`` ``(K, K) float32``."""
    k = torch.tensor(taps, dtype=torch.float32)
    return torch.outer(k, k) / k.sum() ** 2 * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion (``up``), pad (``pad[0]`` before, ``pad[1]`` after, both axes), then filter
    every channel with ``kernel`` ``(K, K)`` (true convolution: the kernel flipped). ``x`` ``(N, C, H, W)`` →
    ``(N, C, H up + pad0 + pad1 - K + 1, ...)``. The reference's upfirdn2d without downsampling."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h, up, w, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, k, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) * √2`` with ``bias`` per channel (dimension 1)."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), 0.2) * LRELU_GAIN


class PixelNorm(nn.Module):
    """Each latent scaled to unit root mean square over its channels (dimension 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight used × ``lr_mul/√in``, bias × ``lr_mul``; with
    ``activation`` the fused leaky ReLU takes the bias."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """The FIR blur after a transposed conv: :func:`upfirdn2d` with the kernel × ``factor²``."""

    def __init__(self, pad: tuple[int, int], factor: int) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d(gain=float(factor**2)))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 FIR upsampling of the RGB skip (zero insertion, pad (2, 1), the kernel × 4)."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d(gain=float(factor**2)))
        self.factor = factor
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


def modulated_weight(weight: torch.Tensor, style: torch.Tensor, demodulate: bool = True) -> torch.Tensor:
    """StyleGAN2's per-sample weight: ``weight`` ``(out, in, k, k)`` or ``(1, out, in, k, k)`` (any run-time
    scale already applied) times ``style`` ``(N, in)`` per input channel, then, with ``demodulate``, each
    output filter scaled to unit norm (``rsqrt(sum w² + 1e-8)``). Returns ``(N, out, in, k, k)``."""
    w = weight.reshape(1, *weight.shape[-4:]) * style[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    return w


def grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Each sample of ``x`` ``(N, in, H, W)`` convolved with its own ``weight`` ``(N, out, in, k, k)`` (one
    grouped conv for the batch). Returns ``(N, out, H', W')``."""
    n, c_in, h, w = x.shape
    c_out, k = weight.shape[1], weight.shape[-1]
    out = F.conv2d(
        x.reshape(1, n * c_in, h, w), weight.reshape(n * c_out, c_in, k, k), padding=padding, groups=n
    )
    return out.view(n, c_out, out.shape[-2], out.shape[-1])


class ModulatedConv2d(nn.Module):
    """Modulated convolution: weight ``(1, out, in, k, k)`` × ``1/√(in k²)`` × the style (per input channel,
    from ``modulation``), demodulated per output filter unless ``demodulate=False``; ``upsample``: a
    stride-2 transposed conv followed by :class:`Blur`."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.k = c_in, c_out, kernel
        self.scale = 1.0 / math.sqrt(c_in * kernel * kernel)
        self.padding = kernel // 2
        self.weight = nn.Parameter(torch.randn(1, c_out, c_in, kernel, kernel))
        self.modulation = EqualLinear(style_dim, c_in, bias_init=1.0)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(BLUR_KERNEL) - factor) - (kernel - 1)
            self.blur = Blur(((p + 1) // 2 + factor - 1, p // 2 + 1), factor)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        weight = modulated_weight(self.scale * self.weight, self.modulation(style), self.demodulate)
        if not self.upsample:
            return grouped_conv2d(x, weight, self.padding)
        n, _, h, w = x.shape
        weight = weight.transpose(1, 2).reshape(n * self.c_in, self.c_out, self.k, self.k)
        out = F.conv_transpose2d(x.reshape(1, n * self.c_in, h, w), weight, stride=2, padding=0, groups=n)
        return self.blur(out.view(n, self.c_out, out.shape[-2], out.shape[-1]))


class NoiseInjection(nn.Module):
    """Adds ``weight`` times per-pixel noise ``(N or 1, 1, H, W)`` (fresh Gaussian noise when None)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated conv, noise, fused leaky ReLU (keys ``conv.*``, ``noise.weight``, ``activate.bias``)."""

    def __init__(self, c_in: int, c_out: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(c_in, c_out, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(c_out)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class FusedLeakyReLU(nn.Module):
    """:func:`fused_leaky_relu` with its own per-channel ``bias``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (not demodulated) plus ``bias`` ``(1, 3, 1, 1)``, plus the previous RGB
    upsampled (:class:`Upsample`) when given."""

    def __init__(self, c_in: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(c_in, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConstantInput(nn.Module):
    """The learned 4x4 start ``input`` ``(1, C, 4, 4)``, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class Generator(nn.Module):
    """rosinality's StyleGAN2 ``Generator(size, style_dim, n_mlp, channel_multiplier)`` (module docstring)."""

    def __init__(
        self,
        size: int = 1024,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        lr_mlp: float = 0.01,
        max_channels: int = 512,
    ) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"StyleGAN2 size must be a power of two >= 8, got {size}")
        self.size, self.style_dim = size, style_dim
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)],
        )
        widths = {r: min(w, max_channels) for r, w in channel_widths(channel_multiplier).items()}
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.input = ConstantInput(widths[4])
        self.conv1 = StyledConv(widths[4], widths[4], style_dim)
        self.to_rgb1 = ToRGB(widths[4], style_dim, upsample=False)
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        c_in = widths[4]
        for i in range(3, self.log_size + 1):
            c_out = widths[2**i]
            self.convs.append(StyledConv(c_in, c_out, style_dim, upsample=True))
            self.convs.append(StyledConv(c_out, c_out, style_dim))
            self.to_rgbs.append(ToRGB(c_out, style_dim))
            c_in = c_out

    def fixed_noise(self) -> list[torch.Tensor]:
        """The stored noise maps, one per StyledConv (what ``randomize_noise=False`` uses)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shapes ``(1, 1, r, r)`` of the noise maps :meth:`forward` takes, one per StyledConv."""
        return [tuple(n.shape) for n in self.fixed_noise()]

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(N, 512)`` → W ``(N, 512)``."""
        return self.style(z)

    def forward(
        self,
        latent: torch.Tensor,
        input_is_latent: bool = True,
        randomize_noise: bool = False,
        noise: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """RGB ``(N, 3, S, S)`` from ``latent``: z ``(N, 512)`` (``input_is_latent=False``: mapped first), W
        ``(N, 512)`` (used for every layer) or W+ ``(N, n_latent, 512)``. Noise: ``noise`` (one map
        ``(N or 1, 1, r, r)`` per StyledConv, :meth:`noise_shapes`; e.g. optimised ones), else the stored
        maps, or fresh noise with ``randomize_noise``. Truncation and style mixing are the caller's (mix W+
        rows)."""
        if not input_is_latent:
            latent = self.mapping(latent)
        if latent.ndim == 2:
            latent = latent[:, None].expand(-1, self.n_latent, -1)
        if latent.shape[1] != self.n_latent:
            raise ValueError(
                f"expected {self.n_latent} latents for a {self.size} px generator, got {latent.shape[1]}"
            )
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.fixed_noise()
        elif len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
        out = self.conv1(self.input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * k](out, latent[:, i], noise[2 * k + 1])
            out = self.convs[2 * k + 1](out, latent[:, i + 1], noise[2 * k + 2])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip


def stylegan2_ffhq_1024(**layout) -> Generator:
    """The registry's factory: the 1024 px FFHQ config-f generator (``g_ema`` of
    ``stylegan2-ffhq-config-f.pt``); ``layout`` (keyword arguments of :class:`Generator`) builds another
    size or width, e.g. the tests' tiny one."""
    return Generator(**{"size": 1024, **layout})
