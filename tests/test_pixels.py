"""models/pixels.py: the registry's normalisations, in the reference code's exact order of operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.pixels import IMAGENET, SIGNED, SIGNED_FROM_UNIT, UNIT, Normalisation
from models.weights import REGISTRY


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(0)).float()


def test_each_form_is_bit_for_bit_the_reference_formula(pixels):
    assert torch.equal(SIGNED.to_network(pixels), pixels / 127.5 - 1.0)  # GHOST's generator input
    assert torch.equal(SIGNED_FROM_UNIT.to_network(pixels), (pixels / 255.0 - 0.5) / 0.5)  # its ArcFace
    assert torch.equal(UNIT.to_network(pixels), pixels / 255.0)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    assert torch.equal(IMAGENET.to_network(pixels), (pixels / 255.0 - mean) / std)
    # the same along another channel axis ((H, W, 3) images)
    hwc = pixels[0].permute(1, 2, 0)
    chw = IMAGENET.to_network(pixels[0])
    assert torch.equal(IMAGENET.to_network(hwc, channel_dim=-1), chw.permute(1, 2, 0))


@pytest.mark.parametrize("norm", [SIGNED, SIGNED_FROM_UNIT, UNIT, IMAGENET])
def test_to_pixels_inverts_to_network(norm, pixels):
    back = norm.to_pixels(norm.to_network(pixels))
    assert torch.allclose(back, pixels, atol=1e-3)
    assert torch.equal(back.round(), pixels)


def test_descriptions_name_the_formula_and_range():
    assert SIGNED.describe() == "RGB, x/127.5 - 1, range [-1, 1]"
    assert SIGNED_FROM_UNIT.describe() == "RGB, (x/255 - 0.5) / 0.5, range [-1, 1]"
    assert UNIT.describe() == "RGB, x/255, range [0, 1]"
    assert "0.485" in IMAGENET.describe() and "0.229" in IMAGENET.describe()


def test_every_registry_entry_names_a_normalisation():
    assert all(isinstance(w.normalisation, Normalisation) for w in REGISTRY.values())
    assert REGISTRY["aei_net"].normalisation == REGISTRY["hear_net"].normalisation == SIGNED


def test_the_faceshifter_stage_feeds_its_networks_the_registry_normalisation():
    from stages.swap_faceshifter import to_signed, to_uint8

    crops = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = to_signed(crops, "cpu", torch.float32)
    nchw = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    expected = REGISTRY["aei_net"].normalisation.to_network(nchw)
    assert torch.equal(x, expected)
    assert np.array_equal(to_uint8(x), crops)
