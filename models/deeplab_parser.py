"""MaskFaceGAN's face parser: torchvision's DeepLabV3-ResNet50 with 9 classes, our own code in the layout of
MaskFaceGAN's ``FaceParser`` (``models/face_parser/face_parser.py``: ``self.model =
deeplabv3_resnet50(pretrained=False, num_classes=9)``, no auxiliary head), loading its ``state.pt`` strictly.

Checked in ``make test`` against the reference code's outputs (``shared/interop/VECTORS.md``,
``maskfacegan_parser``). The checkpoint is a plain state_dict whose keys start with ``model.`` plus a
``loss.weight`` entry (the training loss's class weights), which MaskFaceGAN deletes before its strict load;
the registry entry ``maskfacegan_parser`` drops it the same way (``WeightFile.drop_keys``).

Layout: ``model.backbone`` a ResNet-50 trunk whose layers 3 and 4 trade their stride for dilation 2 and 4
(output stride 8; :class:`models.hopenet.ResNet50Trunk`); ``model.classifier`` = ASPP (a 1x1 branch, three
3x3 branches dilated 12, 24 and 36, an image-pooling branch; each conv, BatchNorm, ReLU; concatenated and
projected 1280→256, dropout in training) then a 3x3 conv, BatchNorm, ReLU and a 1x1 conv to the classes. The
logits are upsampled bilinearly (``align_corners=False``) to the input's size.

Smaller layouts (trunk ``width`` below 64, ``aspp_width`` below 256, ``input_size`` below 512) exist only for
the tests' tiny parsers; the public file has the defaults.

Conventions: input ``(N, 3, 512, 512)`` RGB in [-1, 1] (MaskFaceGAN: ``x01 * 2 - 1`` after an area resize to
512); output logits ``(N, 9, 512, 512)``; classes :data:`CLASSES`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.hopenet import ResNet50Trunk

CLASSES = ("background", "mouth", "eyebrows", "eyes", "hair", "nose", "skin", "ears", "belowface")
INPUT_SIZE = 512
ATROUS_RATES = (12, 24, 36)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = 0 if kernel == 1 else dilation
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class ASPPPooling(nn.Sequential):
    """Image pooling branch: global average, 1x1 conv, BatchNorm, ReLU, upsampled back (bilinear)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(c_in, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (keys ``convs.0..4``, ``project``)."""

    def __init__(self, c_in: int, rates: tuple[int, ...] = ATROUS_RATES, c_out: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(c_in, c_out))]
        branches += [nn.Sequential(*_conv_bn_relu(c_in, c_out, 3, r)) for r in rates]
        branches.append(ASPPPooling(c_in, c_out))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * c_out, c_out), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3(nn.Module):
    """torchvision's ``deeplabv3_resnet50`` without the auxiliary head: ``backbone`` and ``classifier``."""

    def __init__(self, num_classes: int = len(CLASSES), width: int = 64, aspp_width: int = 256) -> None:
        super().__init__()
        self.backbone = ResNet50Trunk(dilate=(False, True, True), width=width)
        del self.backbone.avgpool  # torchvision keeps only conv1 .. layer4 of the trunk
        self.classifier = nn.Sequential(
            ASPP(32 * width, c_out=aspp_width),
            *_conv_bn_relu(aspp_width, aspp_width, 3),
            nn.Conv2d(aspp_width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        f = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        f = b.layer4(b.layer3(b.layer2(b.layer1(f))))
        return F.interpolate(self.classifier(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


class MaskFaceGANParser(nn.Module):
    """MaskFaceGAN's ``FaceParser`` network (keys ``model.*``): ``(N, 3, H, W)`` RGB in [-1, 1] → logits
    ``(N, 9, H, W)`` (:data:`CLASSES`)."""

    def __init__(self, width: int = 64, aspp_width: int = 256, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.model = DeepLabV3(width=width, aspp_width=aspp_width)
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def probabilities(self, image01: torch.Tensor) -> torch.Tensor:
        """MaskFaceGAN's parse of images ``(N, 3, H, W)`` RGB in [0, 1]: area-resized to 512 when they are
        not, mapped to [-1, 1], class probabilities (softmax) ``(N, 9, 512, 512)`` (``input_size``)."""
        if image01.shape[-1] != self.input_size:
            size = (self.input_size, self.input_size)
            image01 = F.interpolate(image01, size=size, mode="area")
        return torch.softmax(self(image01 * 2.0 - 1.0), dim=1)


def region_mask(probs: torch.Tensor, classes: tuple[str, ...], size: int | None = 1024) -> torch.Tensor:
    """The summed probability of ``classes`` ``(N, 1, S, S)``, resized bilinearly (``align_corners=False``) to
    ``size`` (None: kept at the parse's 512), as MaskFaceGAN's ``get_image_masks`` makes its masks."""
    ids = [CLASSES.index(c) for c in classes]
    mask = probs[:, ids].sum(dim=1, keepdim=True)
    if size is not None and mask.shape[-1] != size:
        mask = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)
    return mask


def maskfacegan_parser(**layout) -> MaskFaceGANParser:
    """The registry's factory; ``layout`` (keyword arguments of :class:`MaskFaceGANParser`: trunk
    ``width``, ``aspp_width``, ``input_size``) builds a smaller one, e.g. the tests' tiny one."""
    return MaskFaceGANParser(**layout)
