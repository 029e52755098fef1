"""FaceShifter training losses (Li et al. 2019), pure functions on batched tensors.

Conventions: images ``(N, 3, S, S)`` float RGB in [-1, 1]; identity vectors ``(N, D)`` float, raw ArcFace
output (the cosine makes the scale irrelevant); attribute maps as :meth:`AEINet.get_attributes` returns
them (a sequence of ``(N, C_k, H_k, W_k)``); ``same`` ``(N,)`` bool (or 0/1 float): True where the
sample's source image is its target image (a reconstruction pair). Every loss is a scalar tensor.

AEI-Net (stage 1): ``L = L_adv + λ_att L_att + λ_id L_id + λ_rec L_rec`` with λ_att = 10, λ_id = 5,
λ_rec = 10; the discriminator minimises :func:`models.discriminator.d_hinge_loss`.
HEAR-Net (stage 2): ``L = L_id + λ_chg L_chg + λ_rec L_rec`` with λ_chg = 1, λ_rec = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.discriminator import d_hinge_loss, g_hinge_loss

__all__ = [
    "AEILossWeights",
    "HEARLossWeights",
    "aei_generator_loss",
    "attribute_loss",
    "change_loss",
    "discriminator_loss",
    "hear_loss",
    "identity_loss",
    "reconstruction_loss",
]


@dataclass(frozen=True)
class AEILossWeights:
    """Weights of the AEI-Net generator loss terms (paper: adv 1, att 10, id 5, rec 10)."""

    adv: float = 1.0
    att: float = 10.0
    id: float = 5.0
    rec: float = 10.0


@dataclass(frozen=True)
class HEARLossWeights:
    """Weights of the HEAR-Net loss terms (paper: id 1, chg 1, rec 1)."""

    id: float = 1.0
    chg: float = 1.0
    rec: float = 1.0


def identity_loss(z_output: torch.Tensor, z_source: torch.Tensor) -> torch.Tensor:
    """``L_id = mean_n (1 - cos(z_id(Y)_n, z_id(X_s)_n))``.

    z_output: ``(N, D)`` identity of the generated faces (gradients flow through it); z_source: ``(N, D)``
    identity of the sources (computed without gradients). Returns a scalar in [0, 2]; 0 when every pair
    points the same way.
    """
    if z_output.shape != z_source.shape or z_output.dim() != 2:
        raise ValueError(
            f"identity_loss needs two (N, D) tensors, got {tuple(z_output.shape)} and {tuple(z_source.shape)}"
        )
    return (1.0 - F.cosine_similarity(z_output, z_source, dim=1)).mean()


def attribute_loss(attr_output: Sequence[torch.Tensor], attr_target: Sequence[torch.Tensor]) -> torch.Tensor:
    """``L_att = ½ Σ_k mean ‖z_att^k(Y) - z_att^k(X_t)‖²`` over all attribute levels k.

    Each term is the mean squared difference over the elements of level k (per sample, then over the
    batch). attr_output, attr_target: the same number of maps, pairwise of equal shape ``(N, C_k, H_k, W_k)``.
    Returns a scalar >= 0; 0 when the maps are equal.
    """
    if len(attr_output) != len(attr_target) or not attr_output:
        raise ValueError(
            f"attribute_loss needs the same non-zero number of levels, got {len(attr_output)} and "
            f"{len(attr_target)}"
        )
    total = torch.zeros((), device=attr_output[0].device)
    for k, (a, b) in enumerate(zip(attr_output, attr_target)):
        if a.shape != b.shape:
            raise ValueError(f"attribute level {k} shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
        total = total + (a - b).pow(2).flatten(1).mean(1).mean()
    return 0.5 * total


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """``L_rec = ½ mean ‖Y - X_t‖²`` over the samples whose source is the target (``same``), else 0.

    output, target: ``(N, 3, S, S)`` RGB in [-1, 1]; same: ``(N,)`` bool or 0/1 float. The per-sample mean
    squared error is averaged over the same-identity samples only (GHOST's normalisation), so the value
    does not depend on how many of them a batch holds. Returns a scalar in [0, 2]; exactly 0 (with a zero
    gradient) when the batch holds no same-identity sample.
    """
    if output.shape != target.shape:
        raise ValueError(
            f"reconstruction_loss shapes differ: {tuple(output.shape)} and {tuple(target.shape)}"
        )
    if same.shape != (output.shape[0],):
        raise ValueError(f"same must be ({output.shape[0]},), got {tuple(same.shape)}")
    mask = same.to(device=output.device, dtype=output.dtype)
    per_sample = 0.5 * (output - target).pow(2).flatten(1).mean(1)
    return (per_sample * mask).sum() / mask.sum().clamp(min=1.0)


def change_loss(refined: torch.Tensor, swapped: torch.Tensor) -> torch.Tensor:
    """``L_chg = mean |Y - Ŷ(s,t)|`` (L1): how far HEAR-Net's refined face moves from the AEI-Net swap.

    refined, swapped: ``(N, 3, S, S)`` RGB in [-1, 1]. Returns a scalar in [0, 2].
    """
    if refined.shape != swapped.shape:
        raise ValueError(f"change_loss shapes differ: {tuple(refined.shape)} and {tuple(swapped.shape)}")
    return (refined - swapped).abs().mean()


def discriminator_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-scale hinge loss of the discriminator (:func:`d_hinge_loss`; pass fake logits of the detached
    generator output). Returns (scalar loss, ``{"d": loss, "d_real": mean real logit, "d_fake": mean fake
    logit}`` as floats; logits averaged over patches and scales)."""
    loss = d_hinge_loss(real_logits, fake_logits)
    real = torch.stack([r.detach().mean() for r in real_logits]).mean()
    fake = torch.stack([f.detach().mean() for f in fake_logits]).mean()
    return loss, {"d": float(loss.detach()), "d_real": float(real), "d_fake": float(fake)}


def aei_generator_loss(
    fake_logits: Sequence[torch.Tensor],
    z_output: torch.Tensor,
    z_source: torch.Tensor,
    attr_output: Sequence[torch.Tensor],
    attr_target: Sequence[torch.Tensor],
    output: torch.Tensor,
    target: torch.Tensor,
    same: torch.Tensor,
    weights: AEILossWeights = AEILossWeights(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """AEI-Net generator loss ``adv·L_adv + att·L_att + id·L_id + rec·L_rec``.

    fake_logits: the discriminator's raw logit maps of ``output`` (one per scale, gradients flowing to
    the generator); L_adv = :func:`g_hinge_loss`. z_output ``(N, D)``: identity of ``output``; z_source
    ``(N, D)``: identity of the sources. attr_output / attr_target: attribute maps of ``output`` and of
    the target. output, target ``(N, 3, S, S)`` RGB in [-1, 1]; same ``(N,)``.

    Returns (scalar total, ``{"g", "adv", "att", "id", "rec"}`` as floats: the total and the unweighted
    terms).
    """
    adv = g_hinge_loss(fake_logits)
    att = attribute_loss(attr_output, attr_target)
    ident = identity_loss(z_output, z_source)
    rec = reconstruction_loss(output, target, same)
    total = weights.adv * adv + weights.att * att + weights.id * ident + weights.rec * rec
    terms = {"g": total, "adv": adv, "att": att, "id": ident, "rec": rec}
    return total, {k: float(v.detach()) for k, v in terms.items()}


def hear_loss(
    z_output: torch.Tensor,
    z_source: torch.Tensor,
    refined: torch.Tensor,
    swapped: torch.Tensor,
    target: torch.Tensor,
    same: torch.Tensor,
    weights: HEARLossWeights = HEARLossWeights(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """HEAR-Net loss ``id·L_id + chg·L_chg + rec·L_rec``.

    z_output ``(N, D)``: identity of the refined faces; z_source ``(N, D)``: identity of the sources.
    refined: HEAR-Net output, swapped: the frozen AEI-Net's Ŷ(s,t), target: X_t, all ``(N, 3, S, S)`` RGB in
    [-1, 1]; same ``(N,)``. Returns (scalar total, ``{"g", "id", "chg", "rec"}`` as floats).
    """
    ident = identity_loss(z_output, z_source)
    chg = change_loss(refined, swapped)
    rec = reconstruction_loss(refined, target, same)
    total = weights.id * ident + weights.chg * chg + weights.rec * rec
    terms = {"g": total, "id": ident, "chg": chg, "rec": rec}
    return total, {k: float(v.detach()) for k, v in terms.items()}
