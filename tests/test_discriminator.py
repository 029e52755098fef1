"""Multi-scale PatchGAN discriminator and hinge losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.discriminator import (
    MultiscaleDiscriminator,
    NLayerDiscriminator,
    d_hinge_loss,
    g_hinge_loss,
    patch_side,
)

TINY = {"ndf": 8, "n_layers": 3, "num_d": 2}


def images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """``(n, 3, side, side) float32`` in [-1, 1]."""
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_default_config_shapes_at_256() -> None:
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator()
    assert len(disc.scales) == 3
    with torch.inference_mode():
        out = disc(images(1, 256))
    assert [tuple(o.shape) for o in out] == [(1, 1, 7, 7), (1, 1, 5, 5), (1, 1, 4, 4)]
    assert [patch_side(s, 6) for s in (256, 128, 64)] == [7, 5, 4]
    assert all(torch.isfinite(o).all() for o in out)
    widths = [m.out_channels for m in disc.scales[0].modules() if isinstance(m, nn.Conv2d)]
    assert widths == [64, 128, 256, 512, 512, 512, 512, 1]
    assert not any(p.numel() == 0 for p in disc.parameters())


def test_tiny_config_shapes_and_gradients_at_64() -> None:
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(**TINY)
    x = images(2, 64)
    out = disc(x)
    assert [tuple(o.shape) for o in out] == [(2, 1, 11, 11), (2, 1, 7, 7)]
    assert [patch_side(s, 3) for s in (64, 32)] == [11, 7]
    g_hinge_loss(out).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())


def test_scales_see_average_pooled_input() -> None:
    torch.manual_seed(0)
    disc = MultiscaleDiscriminator(**TINY).eval()
    x = images(1, 64, seed=1)
    with torch.inference_mode():
        out = disc(x)
        half = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        torch.testing.assert_close(out[0], disc.scales[0](x))
        torch.testing.assert_close(out[1], disc.scales[1](half))


def test_norm_is_configurable() -> None:
    net = NLayerDiscriminator(ndf=8, n_layers=2, norm=nn.BatchNorm2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2
    assert net(images(2, 32)).shape == (2, 1, patch_side(32, 2), patch_side(32, 2))
    with pytest.raises(ValueError):
        NLayerDiscriminator(n_layers=0)


def test_hinge_losses_signs() -> None:
    shapes = [(2, 1, 11, 11), (2, 1, 7, 7)]
    big = [torch.full(s, 5.0) for s in shapes]
    low = [torch.full(s, -5.0) for s in shapes]
    zero = [torch.zeros(s) for s in shapes]
    # D is perfect (real >= 1, fake <= -1): no loss.
    assert d_hinge_loss(big, low).item() == 0.0
    # D fooled both ways: 2 scales x (relu(1 + 5) + relu(1 + 5)).
    assert d_hinge_loss(low, big).item() == pytest.approx(24.0)
    # Undecided logits: 1 + 1 per scale.
    assert d_hinge_loss(zero, zero).item() == pytest.approx(4.0)
    # G gains as the fake logits rise; the loss is unbounded below (no margin for G).
    assert g_hinge_loss(big).item() == pytest.approx(-10.0)
    assert g_hinge_loss(low).item() == pytest.approx(10.0)
    assert g_hinge_loss(big) < g_hinge_loss(zero) < g_hinge_loss(low)


def test_hinge_gradients_vanish_past_the_margin() -> None:
    real = [torch.full((1, 1, 4, 4), 3.0, requires_grad=True)]
    fake = [torch.full((1, 1, 4, 4), 0.5, requires_grad=True)]
    d_hinge_loss(real, fake).backward()
    assert torch.equal(real[0].grad, torch.zeros(1, 1, 4, 4))  # beyond the margin: no push
    assert (fake[0].grad > 0).all()  # inside it: pushed down


def test_hinge_scale_count_must_match() -> None:
    with pytest.raises(ValueError):
        d_hinge_loss([torch.zeros(1)], [])
    with pytest.raises(ValueError):
        g_hinge_loss([])
