"""FaceShifter's training losses (models.losses, used by pipeline/training/recipes/faceshifter.py) on
constructed tensors."""

from __future__ import annotations

import pytest
import torch

from models.discriminator import d_hinge_loss, g_hinge_loss
from models.losses import (
    AEILossWeights,
    aei_generator_loss,
    attribute_loss,
    change_loss,
    discriminator_loss,
    hear_loss,
    identity_loss,
    reconstruction_loss,
)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identity_loss_is_zero_for_the_same_direction_and_two_for_opposite() -> None:
    z = rand(4, 512)
    assert identity_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_loss(3.0 * z, z).item() == pytest.approx(0.0, abs=1e-6)  # raw embeddings: scale-free
    assert identity_loss(-z, z).item() == pytest.approx(2.0, abs=1e-6)
    ortho = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert identity_loss(ortho, ortho.flip(0)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="identity_loss"):
        identity_loss(z, z[:, :10])


def test_attribute_loss_is_half_the_summed_per_level_mse() -> None:
    a = [rand(2, 4, 2, 2, seed=1), rand(2, 8, 4, 4, seed=2)]
    assert attribute_loss(a, a).item() == 0.0
    b = [a[0] + 1.0, a[1] + 2.0]  # per-level mean squared differences 1 and 4
    assert attribute_loss(b, a).item() == pytest.approx(0.5 * (1.0 + 4.0))
    with pytest.raises(ValueError, match="level 1"):
        attribute_loss(a, [a[0], a[1][:, :2]])


def test_reconstruction_loss_only_counts_same_identity_samples() -> None:
    target = rand(4, 3, 8, 8, seed=3)
    output = target.clone()
    output[1] += 0.5  # a same-identity sample off by 0.5 everywhere: ½ · 0.25
    output[2] += 1.0  # a swap sample: must not count, whatever its error
    same = torch.tensor([True, True, False, False])
    assert reconstruction_loss(output, target, same).item() == pytest.approx(0.5 * 0.25 / 2)
    output[2] -= 5.0
    assert reconstruction_loss(output, target, same).item() == pytest.approx(0.5 * 0.25 / 2)
    assert reconstruction_loss(output, target, same.float()).item() == pytest.approx(0.5 * 0.25 / 2)
    # No same-identity sample: exactly 0, and no gradient reaches the output.
    out = output.clone().requires_grad_(True)
    loss = reconstruction_loss(out, target, torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and out.grad is not None and not out.grad.any()


def test_change_loss_is_l1() -> None:
    x = rand(2, 3, 8, 8, seed=4)
    assert change_loss(x, x).item() == 0.0
    assert change_loss(x - 0.25, x).item() == pytest.approx(0.25)


def test_hinge_signs() -> None:
    real_good, fake_good = [torch.full((2, 1, 3, 3), 1.5)], [torch.full((2, 1, 3, 3), -1.5)]
    assert d_hinge_loss(real_good, fake_good).item() == 0.0
    # Fakes scored as real cost the discriminator, and fakes scored higher cost the generator less.
    assert d_hinge_loss(real_good, [torch.full((2, 1, 3, 3), 1.0)]).item() == pytest.approx(2.0)
    assert (
        g_hinge_loss([torch.full((1, 1, 2, 2), 2.0)]).item() < g_hinge_loss([torch.zeros(1, 1, 2, 2)]).item()
    )
    loss, terms = discriminator_loss(real_good, fake_good)
    assert (
        loss.item() == 0.0
        and terms["d_real"] == pytest.approx(1.5)
        and terms["d_fake"] == pytest.approx(-1.5)
    )


def test_aei_generator_loss_uses_the_paper_weights() -> None:
    assert AEILossWeights() == AEILossWeights(adv=1.0, att=10.0, id=5.0, rec=10.0)
    target = rand(2, 3, 8, 8, seed=5)
    output = target + 0.1
    attrs_t = [rand(2, 4, 4, 4, seed=6)]
    attrs_y = [attrs_t[0] + 0.2]
    z_s = rand(2, 16, seed=7)
    z_y = rand(2, 16, seed=8)
    logits = [rand(2, 1, 3, 3, seed=9), rand(2, 1, 2, 2, seed=10)]
    same = torch.tensor([True, False])
    total, terms = aei_generator_loss(logits, z_y, z_s, attrs_y, attrs_t, output, target, same)
    assert set(terms) == {"g", "adv", "att", "id", "rec"}
    expected = (
        g_hinge_loss(logits)
        + 10 * attribute_loss(attrs_y, attrs_t)
        + 5 * identity_loss(z_y, z_s)
        + 10 * reconstruction_loss(output, target, same)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["g"] == pytest.approx(total.item()) and terms["rec"] == pytest.approx(0.5 * 0.01, rel=1e-4)
    # Identical output, attributes and identity: only the adversarial term is left.
    _, zero = aei_generator_loss(logits, z_s, z_s, attrs_t, attrs_t, target, target, same)
    assert zero["att"] == 0.0 and zero["rec"] == 0.0 and zero["id"] == pytest.approx(0.0, abs=1e-6)


def test_hear_loss_terms() -> None:
    target = rand(2, 3, 8, 8, seed=11)
    swapped = rand(2, 3, 8, 8, seed=12)
    z = rand(2, 16, seed=13)
    total, terms = hear_loss(z, z, swapped, swapped, target, torch.tensor([False, False]))
    assert terms["chg"] == 0.0 and terms["rec"] == 0.0 and total.item() == pytest.approx(0.0, abs=1e-6)
    _, terms = hear_loss(z, z, target, swapped, target, torch.tensor([True, True]))
    assert terms["rec"] == 0.0 and terms["chg"] == pytest.approx(change_loss(target, swapped).item())
