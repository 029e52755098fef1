"""Face-parsing BiSeNet (19 CelebAMask-HQ classes), our own code.

Layout source: GitHub ``zllrunning/face-parsing.PyTorch`` at commit ``d2e684cf1588`` (``model.py`` +
``resnet.py``), whose shared pretrained checkpoint ``79999_iter.pth`` is a plain state_dict for
``BiSeNet(n_classes=19)``. Our ``state_dict()`` has exactly its keys, order, shapes and dtypes (191
entries, 13,300,416 parameters; the key table is ``../shared/interop/bisenet_faceparsing_19.tsv``, see
section 3 of the README there), so the file loads with ``load_state_dict(strict=True)``, e.g. through
``models.checkpoints.load_state_dict_file``.

Conventions (those the checkpoint was trained and evaluated with):
- input: ``(N, 3, 512, 512) float32`` **RGB**, ``x / 255`` then ImageNet normalisation
  (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225); the reference resizes the whole face image to
  512 x 512 with PIL bilinear first. Any H, W works mechanically, but the weights were trained at 512.
- output: a tuple of three ``(N, 19, H, W) float32`` **logit** maps (no softmax), each upsampled
  bilinearly (``align_corners=True``) to the input size: main (from the fusion module), aux16 and aux32
  (training-time auxiliary heads). Inference uses ``argmax`` (or softmax) of the main map.
- :func:`parse_faces` wraps all of that for ``[0, 1]`` RGB crops of any size and returns probabilities.

Architecture: ResNet-18 trunk ``cp.resnet`` (7x7/2 conv, BN, ReLU, 3x3/2 max-pool, four stages of two
BasicBlocks; 64/128/256/512 channels at strides 4/8/16/32) → context path: ``arm32`` and ``arm16``
attention-refinement (3x3 ConvBNReLU to 128, then a channel gate: global mean → 1x1 conv → BN → sigmoid)
on the stride-32 and stride-16 features, the global context ``conv_avg`` (1x1 ConvBNReLU of the
globally pooled stride-32 feature) added to ``arm32``, nearest-upsampled and refined by ``conv_head32``,
added to ``arm16``, nearest-upsampled and refined by ``conv_head16``. There is no spatial path: the
stride-8 trunk feature (``layer2``, 128 ch) takes its place in the fusion module ``ffm``
(concat → 1x1 ConvBNReLU 256 → squeeze-excitation gate ``feat * (1 + gate)``). Heads: ``conv_out`` on
the fused stride-8 feature, ``conv_out16`` on the stride-8 context feature (``conv_head16`` output),
``conv_out32`` on the stride-16 context feature (``conv_head32`` output). All convolutions are bias-free;
every BatchNorm has eps 1e-5 and registers ``num_batches_tracked``.

Classes (label id = index):

    ==  ==========  ==  =================  ==  ===================  ==  ==============
     0  background   5  r_eye              10  nose                 15  neck_l (necklace)
     1  skin         6  eye_g (eyeglasses) 11  mouth (inner mouth)  16  cloth
     2  l_brow       7  l_ear              12  u_lip                17  hair
     3  r_brow       8  r_ear              13  l_lip                18  hat
     4  l_eye        9  ear_r (earring)    14  neck
    ==  ==========  ==  =================  ==  ===================  ==  ==============
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.runtime import check_shape
from models.weights import REGISTRY

INPUT_SIZE = 512
NUM_CLASSES = 19

FACE_PARSING_CLASSES: tuple[str, ...] = (
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_g",
    "l_ear",
    "r_ear",
    "ear_r",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
    "neck",
    "neck_l",
    "cloth",
    "hair",
    "hat",
)


class ConvBNReLU(nn.Module):
    """``conv`` (k x k, padding k // 2, no bias) → ``bn`` → ReLU.

    forward: ``(N, in_ch, H, W)`` → ``(N, out_ch, H / stride, W / stride)`` float, >= 0.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, 3x3 convs, the first
    with the stride; the shortcut is ``downsample`` (1x1 conv with the stride, then BN) when the shape
    changes, else the identity.

    forward: ``(N, in_ch, H, W)`` → ``(N, out_ch, H / stride, W / stride)`` float, >= 0.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        # Registration order fixes the state_dict order: conv1, bn1, conv2, bn2, downsample.
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without the classifier: ``conv1`` 7x7/2 → ``bn1`` → ReLU → max-pool 3x3/2 → ``layer1..4``.

    forward: ``(N, 3, H, W)`` → ``(feat8, feat16, feat32)``: the ``layer2`` (128 ch, stride 8),
    ``layer3`` (256 ch, stride 16) and ``layer4`` (512 ch, stride 32) outputs, float, >= 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        for i, (width, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            self.add_module(
                f"layer{i}", nn.Sequential(BasicBlock(in_ch, width, stride), BasicBlock(width, width))
            )
            in_ch = width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class AttentionRefinement(nn.Module):
    """``conv`` (3x3 ConvBNReLU) then a per-channel gate ``sigmoid(bn_atten(conv_atten(mean_hw(feat))))``.

    forward: ``(N, in_ch, H, W)`` → ``(N, out_ch, H, W)`` float, >= 0.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * gate


class ContextPath(nn.Module):
    """ResNet-18 trunk plus attention refinement and global context.

    forward: ``(N, 3, H, W)`` → ``(feat8, context8, context16)``: the trunk's stride-8 feature
    (N, 128, H/8, W/8), and the refined context at stride 8 (``conv_head16`` output, N, 128, H/8, W/8) and
    stride 16 (``conv_head32`` output, N, 128, H/16, W/16); float, >= 0. Upsampling here is nearest.
    """

    def __init__(self) -> None:
        super().__init__()
        # Registration order fixes the state_dict order.
        self.resnet = ResNet18Trunk()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))  # (N, 128, 1, 1), broadcast below
        up32 = F.interpolate(self.arm32(feat32) + context, size=feat16.shape[2:], mode="nearest")
        context16 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + context16, size=feat8.shape[2:], mode="nearest")
        context8 = self.conv_head16(up16)
        return feat8, context8, context16


class FeatureFusion(nn.Module):
    """Fuse two feature maps: ``feat = convblk(cat(a, b))`` (1x1 ConvBNReLU), then a squeeze-excitation
    gate ``g = sigmoid(conv2(relu(conv1(mean_hw(feat)))))`` (1x1 convs, out → out/4 → out), output
    ``feat * g + feat``.

    forward: ``(N, Ca, H, W), (N, Cb, H, W)`` with ``Ca + Cb = in_ch`` → ``(N, out_ch, H, W)`` float, >= 0.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, 1)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat((a, b), dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat * gate + feat


class SegmentationHead(nn.Module):
    """``conv`` (3x3 ConvBNReLU in → mid) then ``conv_out`` (1x1, mid → n_classes, no bias).

    forward: ``(N, in_ch, H, W)`` → ``(N, n_classes, H, W)`` float logits (same resolution).
    """

    def __init__(self, in_ch: int, mid_ch: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.conv_out = nn.Conv2d(mid_ch, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet (layout of face-parsing.PyTorch's ``BiSeNet(n_classes=19)``).

    forward: ``(N, 3, H, W) float32`` RGB, ``x / 255`` then ImageNet-normalised (H = W = 512 for the
    public weights) → ``(main, aux16, aux32)``, each ``(N, n_classes, H, W) float32`` logits, bilinearly
    upsampled (``align_corners=True``) from stride 8, 8 and 16. Use ``main`` for inference.
    """

    def __init__(self, n_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be positive, got {n_classes}")
        self.n_classes = int(n_classes)
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegmentationHead(256, 256, self.n_classes)
        self.conv_out16 = SegmentationHead(128, 64, self.n_classes)
        self.conv_out32 = SegmentationHead(128, 64, self.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init (pretrained checkpoints overwrite every value): convs Kaiming normal (fan-in,
        ReLU gain); BN scale 1, shift 0, running statistics 0 / 1."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_shape(x, ("N", 3, "H", "W"), "BiSeNet's input", note="normalised RGB")
        size = x.shape[2:]
        feat8, context8, context16 = self.cp(x)
        fused = self.ffm(feat8, context8)
        logits = (self.conv_out(fused), self.conv_out16(context8), self.conv_out32(context16))
        main, aux16, aux32 = (
            F.interpolate(t, size=size, mode="bilinear", align_corners=True) for t in logits
        )
        return main, aux16, aux32


def bisenet19() -> BiSeNet:
    """The 19-class face parser (13,300,416 parameters) matching face-parsing.PyTorch's ``79999_iter.pth``."""
    return BiSeNet(NUM_CLASSES)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, antialiased when shrinking, like PIL's BILINEAR resize)."""
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def parse_faces(net: BiSeNet, crops: torch.Tensor) -> torch.Tensor:
    """Per-pixel class probabilities of face crops.

    crops: ``(N, 3, H, W)`` float RGB in [0, 1], any H, W (the crop around one face each).
    Each crop is resized to 512 x 512 (bilinear, antialiased when shrinking, as the reference's PIL
    resize), ImageNet-normalised and run through ``net`` (in eval mode, under ``torch.inference_mode()``;
    the net's previous training mode is restored). The main logits get a softmax over classes at 512 and
    the probabilities are resized back to H, W (bilinear, antialiased when shrinking).

    Returns ``(N, n_classes, H, W) float32`` on ``crops``' device: probabilities in [0, 1] summing to 1
    over dim 1 (up to rounding). Class ids: :data:`FACE_PARSING_CLASSES`. The result is an inference
    tensor (no autograd).
    """
    check_shape(crops, ("N", 3, "H", "W"), "parse_faces' crops", "float", "float RGB in [0, 1]")
    param = next(net.parameters())
    size = (int(crops.shape[2]), int(crops.shape[3]))
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            x = _resize(crops.to(device=param.device, dtype=torch.float32), (INPUT_SIZE, INPUT_SIZE))
            x = REGISTRY["face_parser_bisenet"].normalisation.standardise(x).to(param.dtype)
            probs = torch.softmax(net(x)[0].float(), dim=1)
            probs = _resize(probs, size)
    finally:
        net.train(was_training)
    return probs.to(crops.device)


def class_mask(probs: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Soft mask of a set of classes.

    probs: ``(N, C, H, W)`` probabilities (e.g. from :func:`parse_faces`); classes: distinct class ids
    in ``[0, C)`` (e.g. ``(1, 2, 3, 4, 5, 10, 11, 12, 13)`` for the inner face).
    Returns ``(N, 1, H, W) float32`` in [0, 1]: the summed probability of those classes.
    """
    if probs.ndim != 4:
        raise ValueError(f"class_mask expects (N, C, H, W) probabilities, got {tuple(probs.shape)}")
    ids = [int(c) for c in classes]
    n_classes = probs.shape[1]
    if not ids:
        raise ValueError("class_mask needs at least one class id")
    if len(set(ids)) != len(ids) or any(not 0 <= c < n_classes for c in ids):
        raise ValueError(f"class ids must be distinct and in [0, {n_classes}), got {ids}")
    mask = probs[:, ids].float().sum(dim=1, keepdim=True)
    return mask.clamp(0.0, 1.0)
