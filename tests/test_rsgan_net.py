"""RSGAN's networks (models/rsgan.py): the paper's 128 px, the 256 px option and a tiny 64 px layout give
the documented shapes; the VAE helpers are the textbook ones."""

from __future__ import annotations

import pytest
import torch

from models.rsgan import RSGAN, RSGANDiscriminator, kl_divergence, reparameterise


@pytest.mark.parametrize("size", [64, 128, 256])
def test_layouts_give_region_latents_rebuilds_and_the_whole_crop(size: int) -> None:
    torch.manual_seed(0)
    net = RSGAN(size=size, base=8, z_dim=16, n_attr=40).eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    face = torch.zeros(2, 1, size, size)
    face[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    out = net(x, face, torch.rand(2, 40))
    assert out["mu_f"].shape == out["lv_h"].shape == (2, 16)
    for key in ("rec_face", "rec_hair", "whole", "swapped"):
        assert out[key].shape == (2, 3, size, size) and out[key].abs().max() <= 1.0
    real, attributes = RSGANDiscriminator(size, 8, 40)(x)
    assert real.shape == (2,) and attributes.shape == (2, 40)
    # the face encoder sees only the face region: pixels outside it do not move its latent
    y = x.clone()
    y[:, :, : size // 8] = 0.5
    assert torch.allclose(net.enc_face(x * face)[0], net.enc_face(y * face)[0])
    with pytest.raises(ValueError, match="power of two"):
        RSGAN(size=96)


def test_kl_and_reparameterisation() -> None:
    mu, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    assert kl_divergence(mu, logvar).item() == pytest.approx(0.0)
    assert kl_divergence(torch.ones(3, 5), logvar).item() == pytest.approx(2.5)  # ½ Σ mu² over 5 dims
    torch.manual_seed(0)
    draws = reparameterise(
        torch.full((20000, 1), 2.0), torch.full((20000, 1), 2 * torch.log(torch.tensor(3.0)))
    )
    assert draws.mean().item() == pytest.approx(2.0, abs=0.1) and draws.std().item() == pytest.approx(
        3.0, abs=0.1
    )
