"""WSC-swap's networks and helpers (models/wsc_net.py, stages/swap_wsc.py, the recipe's 3DMM window): the
target's face reaches the output only through the attribute code, the identity modulates it, the region
split, the probe's logits, the layout-carrying registry entry, Deep3DFaceRecon's window."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from models.wsc_net import (
    TINY_WSC_CONFIG,
    WSC_CONFIG,
    IdentityProbe,
    ModulatedConv2d,
    WSCGenerator,
    wsc_generator,
)


def _inputs(seed: int = 0, n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    region = torch.zeros(n, 1, size, size)
    region[..., size // 4 : 3 * size // 4, size // 5 : 4 * size // 5] = 1.0
    return x, region, torch.randn(n, 512, generator=g)


def test_shapes_range_and_layouts():
    torch.manual_seed(0)
    net = WSCGenerator(**TINY_WSC_CONFIG).eval()
    x, region, z = _inputs()
    with torch.no_grad():
        y, code = net(x, region, z)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert code.shape == (2, TINY_WSC_CONFIG["code_channels"], 4, 4)
    assert float(y.abs().max()) <= 1.0
    assert IdentityProbe(TINY_WSC_CONFIG["code_channels"], 4)(code).shape == (2, 512)
    # the registry factory: keys outside the layout (the rest of the wsc: section) are ignored
    assert sum(
        p.numel() for p in wsc_generator(**TINY_WSC_CONFIG, arcface="x", half=True).parameters()
    ) == sum(p.numel() for p in net.parameters())
    with torch.device("meta"):
        full = wsc_generator()
    assert full.size == WSC_CONFIG["size"] and 20e6 < sum(p.numel() for p in full.parameters()) < 25e6
    with pytest.raises(ValueError, match="powers of two"):
        WSCGenerator(size=64, code_size=16)


def test_the_targets_face_reaches_the_output_only_through_the_code():
    """No skip connection: with the code held fixed, changing the target inside its face region changes
    nothing; outside the region (the pixel encoder's input) it does; so does the code itself."""
    torch.manual_seed(1)
    net = WSCGenerator(**TINY_WSC_CONFIG).eval()
    x, region, z = _inputs(2)
    inside = x.clone()
    inside[region.expand_as(x) > 0] = -inside[region.expand_as(x) > 0]
    outside = x.clone()
    outside[region.expand_as(x) == 0] = -outside[region.expand_as(x) == 0]
    with torch.no_grad():
        y, code = net(x, region, z)
        assert not torch.allclose(net.encode(inside, region), code)  # the face does reach the code
        with mock.patch.object(net, "encode", return_value=code):
            y_inside, _ = net(inside, region, z)
            y_outside, _ = net(outside, region, z)
        y_code, _ = net(inside, region, z)
    assert torch.equal(y_inside, y)
    assert (y_outside - y).abs().mean() > 1e-3
    assert (y_code - y).abs().mean() > 1e-3


def test_identity_modulates_and_its_scale_does_not_matter():
    torch.manual_seed(2)
    net = WSCGenerator(**TINY_WSC_CONFIG).eval()
    x, region, z = _inputs(3)
    with torch.no_grad():
        y, _ = net(x, region, z)
        y_scaled, _ = net(x, region, 7.0 * z)
        y_other, _ = net(x, region, torch.roll(z, 1, dims=1))
    torch.testing.assert_close(y_scaled, y, atol=1e-5, rtol=0)
    assert (y_other - y).abs().mean() > 1e-3
    conv = ModulatedConv2d(8, 4, 512)
    h = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        out = conv(h, torch.nn.functional.normalize(torch.randn(2, 512), dim=1))
    # demodulated: each output filter has unit norm, so unit-variance noise in gives about unit variance out
    assert out.shape == (2, 4, 5, 5) and 0.3 < float((out - conv.bias[None, :, None, None]).std()) < 3.0


def test_face_region_from_landmarks_is_the_outline(base_cfg):
    from stages.mask_geometry import face_region_masks
    from stages.swap_wsc import region_masks

    size = 64
    lm = np.zeros((68, 2))
    jaw = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    lm[:17] = np.stack([32 - 20 * np.cos(jaw), 30 + 22 * np.sin(jaw)], 1)  # a U from ear to ear
    lm[17:27] = np.stack([np.linspace(14, 50, 10), np.full(10, 22.0)], 1)  # brows
    lm[27:68] = [32.0, 36.0]
    masks = face_region_masks(lm[None], size)
    assert masks.shape == (1, 1, size, size) and masks.dtype == torch.float32
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1
    assert (
        float(masks[0, 0, 38, 32]) == 1.0
        and float(masks[0, 0, 2, 2]) == 0.0
        and float(masks[0, 0, 60, 60]) == 0.0
    )
    same = region_masks(torch.zeros(1, 3, size, size), lm[None])
    assert torch.equal(same, masks)
    with pytest.raises(ValueError):
        region_masks(torch.zeros(1, 3, size, size))


def test_probe_logits_and_chance():
    from pipeline.training.recipes.wsc import PROBE_TEMPERATURE, probe_logits

    z = torch.randn(4, 512) + 5.0  # alike, as a random encoder's embeddings are
    logits = probe_logits(z - z.mean(0), z)
    assert logits.shape == (4, 4) and bool((logits.argmax(1) == torch.arange(4)).all())
    assert float(logits.max()) <= 1.0 / PROBE_TEMPERATURE + 1e-4
    flat = probe_logits(torch.zeros(4, 512), z)  # a probe that says nothing: the uniform distribution
    ce = torch.nn.functional.cross_entropy(flat, torch.arange(4))
    assert abs(float(ce) - np.log(4)) < 1e-6


def test_recon_window_is_deep3dfacerecons_crop(data_dir):
    """The recipe's differentiable cut of Deep3DFaceRecon's 224 window (from the crop's 5 points) against
    :func:`models.face_recon.align_face`'s own PIL crop of the same image and points."""
    from PIL import Image

    from models.face_recon import align_face, input_window
    from pipeline.training.recipes.wsc import recon_grid
    from stages.geometry import frontal_points

    size = 256
    photo = Image.open(data_dir / "faces" / "obama_a.jpg").convert("RGB").resize((size, size))
    from scipy.ndimage import gaussian_filter

    # smoothed: PIL's bicubic and our bilinear sampling agree on smooth images, so what is left is the window
    image = gaussian_filter(np.asarray(photo), sigma=(2, 2, 0))
    points = frontal_points("ghost", size)
    theirs, params = align_face(image, points)
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    ours = torch.nn.functional.grid_sample(
        x, recon_grid(size, 1, "cpu"), mode="bilinear", align_corners=False
    )
    ours = (ours[0].permute(1, 2, 0).numpy() * 255.0).round()
    # align_face's window in its resized image, whole pixels: ours is the same up to those truncations
    w0, h0, scale, _, _ = params
    x0, y0, side = input_window(points, size)
    left = int(int(w0 * scale) / 2 - 112 + (params[3] - w0 / 2) * scale)
    top = int(int(h0 * scale) / 2 - 112 + (h0 / 2 - params[4]) * scale)
    assert abs(side * scale - 224) < 1e-6
    assert abs(x0 * scale - left) < 1.0 and abs(y0 * scale - top) < 1.0, (x0 * scale, left, y0 * scale, top)
    inner = (slice(8, -8), slice(8, -8))
    diff = np.abs(ours - theirs.astype(np.float64))[inner]
    assert diff.mean() < 5.0, diff.mean()
    for dy, dx in ((0, 3), (3, 0), (0, -3), (-3, 0)):  # three pixels off is clearly worse
        moved = np.abs(np.roll(ours, (dy, dx), axis=(0, 1)) - theirs)[inner]
        assert moved.mean() > diff.mean() + 1.0, (dy, dx, moved.mean(), diff.mean())


def test_3dmm_loss_compares_the_non_identity_coefficients():
    """L_3dmm is 0 for the target itself, positive for another face, and gives the swap a gradient; the
    identity and texture coefficients are left out (a swap must change them)."""
    from models.face_recon import split_coefficients
    from pipeline.training.recipes.wsc import RECON_GROUPS, recon_coefficients, recon_loss, tiny_recon

    net = tiny_recon("cpu")
    x, _, _ = _inputs(4, size=64)
    y = torch.roll(x, 1, dims=0).requires_grad_()
    assert float(recon_loss(net, x, x)) == 0.0
    loss = recon_loss(net, y, x)
    loss.backward()
    assert float(loss) > 0 and float(y.grad.abs().sum()) > 0
    assert set(RECON_GROUPS) == {"exp", "angle", "gamma", "trans"}
    assert set(recon_coefficients(net, x)) == set(split_coefficients(torch.zeros(1, 257)))


def test_face_region_from_the_face_parser_is_a_soft_mask():
    """``wsc.regions=parsing``: the parser's face classes summed, one channel at the crop's size (a random
    BiSeNet here: the wiring, not the parse)."""
    from models.bisenet import bisenet19
    from stages.swap_wsc import REGION_CLASSES, region_masks

    torch.manual_seed(0)
    parser = bisenet19().eval()
    x, _, _ = _inputs(5, n=1, size=64)
    masks = region_masks(x, parser=parser)
    assert masks.shape == (1, 1, 64, 64) and masks.dtype == torch.float32
    assert 0.0 <= float(masks.min()) and float(masks.max()) <= 1.0 + 1e-6
    assert "skin" in REGION_CLASSES and "hair" not in REGION_CLASSES and "background" not in REGION_CLASSES
