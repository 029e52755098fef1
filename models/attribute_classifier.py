"""MaskFaceGAN's facial attribute classifier ``BranchedTiny``: a branched multi-task VGG-like network (after
Lu et al.'s fully-adaptive feature sharing, arXiv 1904.02920) giving 40 CelebA attribute logits; our own
code in the layout of MaskFaceGAN's ``models/attribute_classifier/BranchedTiny.py``, loading its
``state.pt`` (a plain state_dict) strictly.

Checked in ``make test`` against the reference code's outputs (``shared/interop/VECTORS.md``,
``maskfacegan_classifier``).

Layout (width w = 64; keys ``conv_layers.<stage>.<branch>.<i>``, ``fc_layers.<stage>.<branch>.<i>``):
- four convolutional stages, each a set of branches with one layout: ``01-06`` (1 branch: conv, conv, pool,
  conv, conv, pool, conv, conv; from RGB), ``06-11`` (2: conv, pool, conv, conv, conv, pool, conv), ``11-12``
  (3: conv), ``12-13`` (10: conv, pool). A conv is a 3x3 conv (padding 1, with bias), ReLU, then BatchNorm;
  a pool is a 2x2 max pool. 224 px in, 7x7x64 out;
- three fully connected stages: ``13-14`` (18 branches: linear 3136→128, ReLU, BatchNorm1d), ``14-15`` (33:
  128→128, ReLU, BatchNorm1d), ``15-16`` (40: linear 128→1, the logits);
- each branch takes its input from one branch of the stage before (:data:`PARENTS`: the tree of the
  reference's forward); the 40 leaves, in order, are :data:`ATTRIBUTES`;
- ``celeba_mean``, ``celeba_std`` buffers ``(1, 3, 1, 1)``: the input normalisation.

Conventions: input ``(N, 3, H, W)`` RGB in [0, 1] (area-resized to 224 when W is not 224, as the reference
does); output ``(N, 40)`` logits (no sigmoid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 64
INPUT_SIZE = 224
CELEBA_MEAN = (0.5061, 0.4254, 0.3828)
CELEBA_STD = (0.2661, 0.2453, 0.2413)

ATTRIBUTES = (
    "blurry", "sideburns", "wearing_earrings", "bald", "goatee", "mustache", "5_o_clock_shadow",
    "arched_eyebrows", "no_beard", "heavy_makeup", "male", "wearing_lipstick", "black_hair",
    "high_cheekbones", "smiling", "mouth_slightly_open", "oval_face", "bushy_eyebrows", "attractive", "young",
    "gray_hair", "brown_hair", "blond_hair", "pale_skin", "chubby", "double_chin", "big_nose",
    "bags_under_eyes", "wearing_necklace", "wearing_necktie", "rosy_cheeks", "bangs", "wavy_hair",
    "straight_hair", "wearing_hat", "big_lips", "narrow_eyes", "pointy_nose", "receding_hairline",
    "eyeglasses",
)  # fmt: skip

# Stage layouts: "C" a conv (3x3, ReLU, BatchNorm), "M" a 2x2 max pool.
CONV_STAGES = (("01-06", "CCMCCMCC"), ("06-11", "CMCCCMC"), ("11-12", "C"), ("12-13", "CM"))
FC_STAGES = (("13-14", True), ("14-15", True), ("15-16", False))  # (stage, hidden: 2w outputs; else a logit)

# For every stage after the first, each branch's parent (an index into the branches of the stage before).
PARENTS: dict[str, tuple[int, ...]] = {
    "06-11": (0, 0),
    "11-12": (0, 0, 1),
    "12-13": (0, 0, 0, 0, 1, 1, 1, 1, 1, 2),
    "13-14": (0, 1, 1, 1, 2, 2, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 8, 9),
    "14-15": (0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 5, 6, 7, 7, 7, 8, 8, 9, 9, 9, 10, 10, 11, 11, 11, 12, 13, 13, 14,
              15, 16, 16, 17),
    "15-16": (0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 7, 7, 8, 8, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
              21, 22, 23, 24, 25, 26, 27, 28, 29, 29, 30, 31, 32),
}  # fmt: skip


def _conv_branch(layout: str, c_in: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for step in layout:
        if step == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(width)]
            c_in = width
    return nn.Sequential(*layers)


def _fc_branch(c_in: int, c_out: int, hidden: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(c_in, c_out)]
    if hidden:
        layers += [nn.ReLU(), nn.BatchNorm1d(c_out)]
    return nn.Sequential(*layers)


class BranchedTiny(nn.Module):
    """The classifier (module docstring): ``(N, 3, H, W)`` RGB in [0, 1] → ``(N, 40)`` logits."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        counts = {"01-06": 1, **{stage: len(p) for stage, p in PARENTS.items()}}
        self.conv_layers = nn.ModuleDict(
            {
                stage: nn.ModuleList(
                    _conv_branch(layout, 3 if stage == "01-06" else width, width)
                    for _ in range(counts[stage])
                )
                for stage, layout in CONV_STAGES
            }
        )
        flat = width * (INPUT_SIZE // 32) ** 2  # five 2x2 pools: 224 -> 7
        fc_in = {"13-14": flat, "14-15": 2 * width, "15-16": 2 * width}
        self.fc_layers = nn.ModuleDict(
            {
                stage: nn.ModuleList(
                    _fc_branch(fc_in[stage], 2 * width if hidden else 1, hidden) for _ in range(counts[stage])
                )
                for stage, hidden in FC_STAGES
            }
        )
        self.register_buffer("celeba_mean", torch.tensor(CELEBA_MEAN).view(1, 3, 1, 1))
        self.register_buffer("celeba_std", torch.tensor(CELEBA_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        outputs = [self.conv_layers["01-06"][0]((x - self.celeba_mean) / self.celeba_std)]
        for stage, _ in CONV_STAGES[1:]:
            outputs = [branch(outputs[p]) for branch, p in zip(self.conv_layers[stage], PARENTS[stage])]
        outputs = [o.flatten(1) for o in outputs]
        for stage, _ in FC_STAGES:
            outputs = [branch(outputs[p]) for branch, p in zip(self.fc_layers[stage], PARENTS[stage])]
        return torch.cat(outputs, dim=1)


def branched_tiny(**layout) -> BranchedTiny:
    """The registry's factory; ``layout`` (``width``) builds a narrower one, e.g. the tests' tiny one."""
    return BranchedTiny(**layout)
