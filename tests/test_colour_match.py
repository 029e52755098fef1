"""The classic swap's colour match (stages/colour_match.py): the Lab transfer, the target's shading on the
source's detail, the detail contrast taken without the light, and the frame's sharpness matched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.colour_match import lab_transfer, rgb_to_lab
from stages.face_warp import control_points, piecewise_affine_grid, sample_pixels
from stages.mask_geometry import face_masks
from tests.classic_fixtures import S


def test_colour_transfer_matches_the_target_lab_mean(cfg, stage, targets):
    lm = targets["crop_lm"]
    pts = control_points(lm.astype(np.float64), S)
    grid = piecewise_affine_grid(stage.src_points, pts, stage.triangles, S)
    warped = sample_pixels(stage.src_tensor, grid)
    target = torch.from_numpy(targets["crops"]).permute(0, 3, 1, 2).float() / 255.0
    masks = face_masks(lm, cfg)

    def lab_mean(img: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        lab = rgb_to_lab(img)
        return (lab * w).sum((1, 2)) / w.sum()

    for f in range(len(lm)):
        w = masks[f]
        before = (lab_mean(warped[f], w) - lab_mean(target[f], w)).abs()
        out = lab_transfer(warped[f], target[f], w)
        after = (lab_mean(out, w) - lab_mean(target[f], w)).abs()
        assert before.max() > 3.0, "source and target should differ in colour before the transfer"
        assert after.max() < 1.0, f"Lab mean after transfer is off by {after.tolist()}"


def test_shading_transfer_takes_the_target_shading_and_keeps_source_detail():
    from stages.colour_match import gauss as _gauss
    from stages.colour_match import shading_transfer

    rng = np.random.default_rng(0)
    detail = (0.05 * rng.random((S, S, 1))).astype(np.float32).repeat(3, 2)
    src = np.clip(0.35 + detail, 0, 1).astype(np.float32)
    ramp = np.linspace(0.3, 0.7, S, dtype=np.float32)[None, :, None]
    dst = np.broadcast_to(ramp, (S, S, 3)).astype(np.float32)  # lit from the right
    w = np.ones((S, S), np.float32)
    out = shading_transfer(src, dst, w, w, sigma=20.0)
    inner = (slice(64, 192), slice(64, 192))
    # the large scale follows the target's gradient, the fine scale is the source's
    assert np.abs(_gauss(out, 10.0) - _gauss(dst, 10.0))[inner].mean() < 0.02
    assert np.abs((out - _gauss(out, 2.0)) - (src - _gauss(src, 2.0)))[inner].mean() < 0.01


def test_lab_stats_detail_contrast_leaves_out_the_light():
    from stages.colour_match import lab_stats

    rng = np.random.default_rng(1)
    texture = 0.03 * rng.standard_normal((S, S)).astype(np.float32)
    ramp = np.linspace(0.25, 0.75, S, dtype=np.float32)[None, :]  # lit from the right
    flat = torch.from_numpy(np.clip(0.5 + texture, 0, 1)).expand(3, S, S)
    lit = torch.from_numpy(np.clip(ramp + texture, 0, 1)).expand(3, S, S)
    w = torch.ones(S, S)
    whole, detail = lab_stats(lit, w)[1][0], lab_stats(lit, w, detail_sigma=20.0)[1][0]
    flat_detail = lab_stats(flat, w, detail_sigma=20.0)[1][0]
    assert whole > 4 * detail  # the light dominates the whole-band std
    assert abs(float(detail / flat_detail) - 1.0) < 0.15  # the detail's contrast, whatever the light
    assert torch.allclose(lab_stats(lit, w)[0], lab_stats(lit, w, detail_sigma=20.0)[0])  # means unchanged


def test_matching_blur_softens_a_sharp_source_for_a_soft_frame():
    from stages.colour_match import blur_image, detail_energy, matching_blur
    from stages.occluders import luma as _luma

    sharp = np.random.default_rng(1).random((64, 64, 3)).astype(np.float32)
    w = np.ones((64, 64), np.float32)
    soft = blur_image(sharp, 1.5)
    sigma = matching_blur(sharp, soft, w, w)
    assert 1.0 < sigma < 2.0
    matched = detail_energy(_luma(blur_image(sharp, sigma)), w)
    assert matched == pytest.approx(detail_energy(_luma(soft), w), rel=0.1)
    assert matching_blur(sharp, sharp, w, w) == 0.0
    assert matching_blur(soft, sharp, w, w) == 0.0  # a softer source is never sharpened


@pytest.mark.parametrize("light", [(1.2, 0.9, 0.5), (0.8, 0.9, 1.2)])  # warm (orange), cool (blue) light
def test_colour_transfer_keeps_dark_grey_grey(light):
    """A source photo under coloured light onto a target under neutral light: its skin takes the target's
    tone, and its dark grey parts (eyes, lashes, stubble) stay near grey instead of taking the whole shift
    and turning the complement of the light (blue under orange light, orange under blue: a shift of a and b
    by the skin's gave 7 and 17 units). In the frame zone (``skin_tone``: what the fill left of glasses
    frames) a and b become the target skin's. The same skin and the same dark grey under two lights."""
    size = 32
    skin, dark = torch.tensor([0.75, 0.62, 0.55]), torch.tensor([0.12, 0.12, 0.12])

    def image(light: torch.Tensor) -> torch.Tensor:
        img = (skin * light)[:, None, None].repeat(1, size, size)
        img[:, :8, :8] = (dark * light)[:, None, None]
        return img

    src, dst = image(torch.tensor(light)), image(torch.ones(3))
    w = torch.ones(size, size)
    w[:8, :8] = 0.0  # the colour statistics are taken on the skin only
    out = rgb_to_lab(lab_transfer(src, dst, w))
    target = rgb_to_lab(dst)
    assert (out[1:, 16:, 16:].mean((1, 2)) - target[1:, 16, 16]).abs().max() < 1.0  # skin: the target's tone
    grey_ab = out[1:, :8, :8].mean((1, 2))
    assert grey_ab.abs().max() < 3.5, f"dark grey became {grey_ab.tolist()} in a/b"
    zone = torch.zeros(size, size)
    zone[:8, :8] = 1.0
    zoned = lab_transfer(src, dst, w, skin_tone=zone)
    assert torch.equal(zoned[:, 8:, 8:], lab_transfer(src, dst, w)[:, 8:, 8:])
    zone_lab = rgb_to_lab(zoned)[:, :8, :8].mean((1, 2))
    assert (zone_lab[1:] - target[1:, 16, 16]).abs().max() < 1.0  # the skin's a and b
    assert (zone_lab[0] - out[0, :8, :8].mean()).abs() < 0.5  # its own lightness
