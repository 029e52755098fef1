"""ArcFace IResNet: state_dict layout equal to the public checkpoints' interop tables, loading, forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.arcface import IBasicBlock, IResNet, iresnet50, iresnet100
from models.checkpoints import check_state_dict
from tests.model_fixtures import interop_table, randomised_state

PARAMS = {"iresnet50": 43_590_848, "iresnet100": 65_156_160}
TABLES = {"iresnet50": "arcface_iresnet50.tsv", "iresnet100": "arcface_iresnet100.tsv"}


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]


def crops(n: int, seed: int = 0) -> torch.Tensor:
    """``(n, 3, 112, 112) float32`` in [-1, 1], as ``(x / 255 - 0.5) / 0.5`` of uint8 RGB crops."""
    gen = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (n, 3, 112, 112), generator=gen, dtype=torch.uint8)
    return (u8.float() / 255 - 0.5) / 0.5


@pytest.fixture(scope="module")
def r50() -> IResNet:
    torch.manual_seed(0)
    return iresnet50().eval()


@pytest.fixture(scope="module")
def r100() -> IResNet:
    torch.manual_seed(0)
    return iresnet100().eval()


@pytest.mark.parametrize("name", ["iresnet50", "iresnet100"])
def test_state_dict_matches_interop_table(name: str, r50: IResNet, r100: IResNet) -> None:
    model = r50 if name == "iresnet50" else r100
    expected = interop_table(TABLES[name])
    mine = layout(model)
    assert [k for k, _, _ in mine] == [k for k, _, _ in expected]  # same keys, same order
    assert mine == expected  # and same shapes and dtypes
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert model.features.weight.requires_grad is False
    assert torch.equal(model.features.weight, torch.ones(512))
    assert all(p.requires_grad for k, p in model.named_parameters() if k != "features.weight")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    assert len(bns) == {"iresnet50": 79, "iresnet100": 154}[name]
    assert all(m.eps == 1e-5 for m in bns)


def test_block_order_matches_reference() -> None:
    """bn1 → conv1 3x3 → bn2 → prelu → conv2 3x3 (stride) → bn3, plus the 1x1-conv + BN shortcut."""
    torch.manual_seed(1)
    block = IBasicBlock(8, 16, stride=2)
    block.load_state_dict(randomised_state(block, seed=2))
    block.eval()
    x = torch.randn(2, 8, 10, 10)

    def bn(m: nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 1e-5)

    y = bn(block.bn1, x)
    y = F.conv2d(y, block.conv1.weight, padding=1)
    y = F.prelu(bn(block.bn2, y), block.prelu.weight)
    y = bn(block.bn3, F.conv2d(y, block.conv2.weight, stride=2, padding=1))
    ds_conv, ds_bn = block.downsample
    ref = y + bn(ds_bn, F.conv2d(x, ds_conv.weight, stride=2))
    with torch.inference_mode():
        out = block(x)
    assert out.shape == (2, 16, 5, 5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert IBasicBlock(16, 16).downsample is None


def test_forward_shape_finite_deterministic(r50: IResNet) -> None:
    x = crops(2)
    with torch.inference_mode():
        a = r50(x)
        b = r50(x)
    assert a.shape == (2, 512) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # different crops, different embeddings
    assert not torch.allclose(a.norm(dim=1), torch.ones(2))  # raw, not L2-normalised
    with pytest.raises(ValueError, match="112"):
        r50(torch.zeros(1, 3, 224, 224))


def test_iresnet100_forward_once(r100: IResNet) -> None:
    with torch.inference_mode():
        y = r100(crops(1, seed=3))
    assert y.shape == (1, 512) and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_saved_state_dict_reloads_to_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(4)
    src = iresnet50()
    src.load_state_dict(randomised_state(src, seed=5))
    src.eval()
    path = tmp_path / "backbone.pth"
    torch.save(src.state_dict(), path)

    torch.manual_seed(6)
    dst = iresnet50().eval()
    x = crops(2, seed=7)
    with torch.inference_mode():
        before = dst(x)
    state = torch.load(path, map_location="cpu", weights_only=True)
    dst.load_state_dict(state, strict=True)
    assert dst.state_dict()["layer1.0.bn1.num_batches_tracked"].item() == 1234
    with torch.inference_mode():
        want, got = src(x), dst(x)
    assert torch.equal(got, want)
    assert not torch.allclose(before, want)


def test_corrupted_state_dict_names_the_bad_keys(r50: IResNet) -> None:
    state = dict(r50.state_dict())
    state["layer3.5.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    del state["layer2.1.prelu.weight"]
    fresh = iresnet50()
    with pytest.raises(ValueError) as err:
        check_state_dict(fresh, state, "backbone.pth")
    msg = str(err.value)
    assert "backbone.pth" in msg
    assert "key 'layer2.1.prelu.weight' is missing" in msg  # the first bad key in the model's order
    assert "1 missing, 0 unexpected, 1 mis-shaped" in msg
    state["layer2.1.prelu.weight"] = fresh.state_dict()["layer2.1.prelu.weight"]
    with pytest.raises(
        ValueError, match=r"'layer3\.5\.conv2\.weight' has shape 256x256x1x1 in the file, 256x256x3x3"
    ):
        check_state_dict(fresh, state, "backbone.pth")
    # torch's own strict load names it too.
    with pytest.raises(RuntimeError, match=r"layer3\.5\.conv2\.weight") as err2:
        fresh.load_state_dict(state, strict=True)
    assert "layer3.5.conv2.weight" in str(err2.value)


def test_unexpected_key_is_named(r50: IResNet) -> None:
    state = {f"module.{k}": v for k, v in r50.state_dict().items()}  # a DataParallel-style file
    with pytest.raises(ValueError, match=r"model\.pt.*'module\.' prefix"):
        check_state_dict(iresnet50(), state, "model.pt")
