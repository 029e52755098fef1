"""Face-parsing BiSeNet: state_dict layout equal to the public checkpoint's interop table, strict loading,
forward wiring, parse_faces / class_mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.bisenet import FACE_PARSING_CLASSES, BiSeNet, bisenet19, class_mask, parse_faces
from models.checkpoints import load_state_dict_file
from tests.model_fixtures import interop_table, randomised_state

PARAMS = 13_300_416


def normalised(n: int, size: int, seed: int) -> torch.Tensor:
    """``(n, 3, size, size) float32``: ImageNet-normalised random RGB in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def net() -> BiSeNet:
    torch.manual_seed(0)
    return bisenet19().eval()


def test_state_dict_matches_interop_table(net: BiSeNet) -> None:
    expected = interop_table("bisenet_faceparsing_19.tsv")
    mine = [(k, tuple(v.shape), v.dtype) for k, v in net.state_dict().items()]
    assert len(expected) == 191
    assert [k for k, _, _ in mine] == [k for k, _, _ in expected]  # same keys, same order
    assert mine == expected  # and same shapes and dtypes
    assert sum(p.numel() for p in net.parameters()) == PARAMS
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 31 and all(m.eps == 1e-5 and m.track_running_stats for m in bns)


def test_class_names() -> None:
    assert len(FACE_PARSING_CLASSES) == 19 and len(set(FACE_PARSING_CLASSES)) == 19
    ids = {name: i for i, name in enumerate(FACE_PARSING_CLASSES)}
    assert ids["background"] == 0 and ids["skin"] == 1 and ids["nose"] == 10 and ids["mouth"] == 11
    assert (ids["u_lip"], ids["l_lip"], ids["neck_l"], ids["hair"], ids["hat"]) == (12, 13, 15, 17, 18)


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The face-parsing.PyTorch forward written with functional ops straight from a state_dict."""

    def bn(p: str, t: torch.Tensor) -> torch.Tensor:
        w, b, m, v = (sd[f"{p}.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
        return F.batch_norm(t, m, v, w, b, False, 0.0, 1e-5)

    def cbr(p: str, t: torch.Tensor) -> torch.Tensor:  # ConvBNReLU
        w = sd[f"{p}.conv.weight"]
        return F.relu(bn(f"{p}.bn", F.conv2d(t, w, padding=w.shape[-1] // 2)))

    def block(p: str, t: torch.Tensor, stride: int) -> torch.Tensor:
        r = F.relu(bn(f"{p}.bn1", F.conv2d(t, sd[f"{p}.conv1.weight"], stride=stride, padding=1)))
        r = bn(f"{p}.bn2", F.conv2d(r, sd[f"{p}.conv2.weight"], padding=1))
        if f"{p}.downsample.0.weight" in sd:
            t = bn(f"{p}.downsample.1", F.conv2d(t, sd[f"{p}.downsample.0.weight"], stride=stride))
        return F.relu(r + t)

    def arm(p: str, t: torch.Tensor) -> torch.Tensor:
        f = cbr(f"{p}.conv", t)
        a = F.avg_pool2d(f, f.shape[2:])
        return f * torch.sigmoid(bn(f"{p}.bn_atten", F.conv2d(a, sd[f"{p}.conv_atten.weight"])))

    def head(p: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(cbr(f"{p}.conv", t), sd[f"{p}.conv_out.weight"])

    r = "cp.resnet"
    t = F.relu(bn(f"{r}.bn1", F.conv2d(x, sd[f"{r}.conv1.weight"], stride=2, padding=3)))
    t = F.max_pool2d(t, 3, 2, 1)
    feats = []
    for layer in range(1, 5):
        t = block(f"{r}.layer{layer}.0", t, 1 if layer == 1 else 2)
        t = block(f"{r}.layer{layer}.1", t, 1)
        feats.append(t)
    f8, f16, f32 = feats[1:]
    avg = cbr("cp.conv_avg", F.avg_pool2d(f32, f32.shape[2:]))
    s32 = arm("cp.arm32", f32) + F.interpolate(avg, f32.shape[2:], mode="nearest")
    cp16 = cbr("cp.conv_head32", F.interpolate(s32, f16.shape[2:], mode="nearest"))
    cp8 = cbr("cp.conv_head16", F.interpolate(arm("cp.arm16", f16) + cp16, f8.shape[2:], mode="nearest"))
    feat = cbr("ffm.convblk", torch.cat([f8, cp8], dim=1))
    g = F.avg_pool2d(feat, feat.shape[2:])
    g = torch.sigmoid(F.conv2d(F.relu(F.conv2d(g, sd["ffm.conv1.weight"])), sd["ffm.conv2.weight"]))
    outs = (head("conv_out", feat * g + feat), head("conv_out16", cp8), head("conv_out32", cp16))
    return tuple(F.interpolate(o, x.shape[2:], mode="bilinear", align_corners=True) for o in outs)


def test_forward_matches_functional_reference() -> None:
    """Wiring check (key names cannot show it): aux16 on the stride-8 context, aux32 on stride 16."""
    torch.manual_seed(1)
    model = BiSeNet()
    model.load_state_dict(randomised_state(model, seed=2, counter=4321))
    model.eval()
    x = normalised(1, 96, seed=3)  # 96 is not a multiple of 32: exercises the explicit-size upsampling
    with torch.inference_mode():
        got = model(x)
        want = reference_forward(model.state_dict(), x)
    for g, w in zip(got, want):
        assert g.shape == (1, 19, 96, 96)
        scale = w.abs().max().item()  # logits of a random net are large: compare relative to their size
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * scale)


def test_forward_shapes_512(net: BiSeNet) -> None:
    with torch.inference_mode():
        outs = net(normalised(2, 512, seed=4))
    assert isinstance(outs, tuple) and len(outs) == 3
    for o in outs:
        assert o.shape == (2, 19, 512, 512) and o.dtype == torch.float32 and torch.isfinite(o).all()
    with pytest.raises(ValueError, match="N, 3, H, W"):
        net(torch.zeros(1, 4, 64, 64))


def test_saved_state_dict_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(5)
    src = bisenet19()
    src.load_state_dict(randomised_state(src, seed=6, counter=4321))
    src.eval()
    path = tmp_path / "79999_iter.pth"
    torch.save(src.state_dict(), path)

    torch.manual_seed(7)
    dst = bisenet19().eval()
    x = normalised(1, 128, seed=8)
    with torch.inference_mode():
        before = dst(x)[0]
    assert load_state_dict_file(dst, path) is dst
    assert dst.state_dict()["cp.resnet.bn1.num_batches_tracked"].item() == 4321
    with torch.inference_mode():
        want, got = src(x), dst(x)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert not torch.allclose(before, want[0])

    state = dict(src.state_dict())
    state["ffm.conv1.weights"] = state.pop("ffm.conv1.weight")  # one key renamed
    bad = tmp_path / "renamed.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"renamed\.pth.*'ffm\.conv1\.weight' is missing") as err:
        load_state_dict_file(bisenet19(), bad)
    assert "1 missing, 1 unexpected" in str(err.value)


def test_parse_faces_and_class_mask(net: BiSeNet) -> None:
    gen = torch.Generator().manual_seed(9)
    crops = torch.rand(2, 3, 256, 256, generator=gen)
    net.train()
    probs = parse_faces(net, crops)
    assert net.training  # mode restored
    net.eval()
    assert probs.shape == (2, 19, 256, 256) and probs.dtype == torch.float32
    assert probs.min() >= 0 and probs.max() <= 1
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 256, 256), rtol=0, atol=1e-5)
    # Same as running the net by hand at 512 (crops upscaled: antialiasing does not apply). One crop is
    # enough: in eval mode every sample is independent.
    with torch.inference_mode():
        x = F.interpolate(crops[:1], size=(512, 512), mode="bilinear", align_corners=False)
        x = (x - torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)) / torch.tensor(
            (0.229, 0.224, 0.225)
        ).view(1, 3, 1, 1)
        p512 = torch.softmax(net(x)[0], dim=1)
        want = F.interpolate(p512, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(probs[:1], want, rtol=1e-4, atol=1e-5)

    skin = class_mask(probs, [1])
    assert skin.shape == (2, 1, 256, 256) and skin.dtype == torch.float32
    torch.testing.assert_close(skin, probs[:, 1:2])
    face = class_mask(probs, (1, 2, 3, 4, 5, 10, 11, 12, 13))
    assert face.min() >= 0 and face.max() <= 1 and (face >= skin - 1e-6).all()
    everything = class_mask(probs, range(19))
    torch.testing.assert_close(everything, torch.ones_like(everything), rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        class_mask(probs, [19])
    with pytest.raises(ValueError):
        class_mask(probs, [1, 1])
    with pytest.raises(ValueError):
        class_mask(probs, [])
