"""HEAR-Net: paper layout, heuristic error, forward/backward, strict file loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.checkpoints import load_state_dict_file
from models.hear_net import TINY_HEAR_CONFIG, HEARNet


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Small networks run many small ops: one thread avoids OpenMP stalls on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(seed: int = 0) -> HEARNet:
    torch.manual_seed(seed)
    return HEARNet(**TINY_HEAR_CONFIG)


def faces(n: int, size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Swapped face, target and reconstruction, each ``(n, 3, size, size)`` RGB in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(n, 3, size, size, generator=g) * 2 - 1 for _ in range(3))


def test_paper_layout() -> None:
    net = HEARNet()
    assert sum(p.numel() for p in net.parameters()) == 16_663_299
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (6, 64),
        (64, 128),
        (128, 256),
        (256, 512),
        (512, 512),
    ]
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in ups] == [
        (512, 512),
        (1024, 256),
        (512, 128),
        (256, 64),
        (128, 3),
    ]
    x, t, r = faces(1, 256)
    with torch.inference_mode():
        y = net.eval()(x, HEARNet.heuristic_error(t, r))
    assert y.shape == (1, 3, 256, 256) and float(y.abs().max()) <= 1.0


def test_heuristic_error() -> None:
    _, t, r = faces(2, 64)
    err = HEARNet.heuristic_error(t, r)
    assert torch.equal(err, t - r) and float(err.abs().max()) <= 2.0
    assert not bool(HEARNet.heuristic_error(t, t).any())
    with pytest.raises(ValueError, match="equal shapes"):
        HEARNet.heuristic_error(t, r[:1])


def test_tiny_forward_shapes_range_and_backward() -> None:
    net = tiny()
    assert sum(p.numel() for p in net.parameters()) == 262_243
    x, t, r = faces(2, 64)
    y = net(x, HEARNet.heuristic_error(t, r))
    assert y.shape == (2, 3, 64, 64) and y.dtype == torch.float32
    assert float(y.detach().abs().max()) <= 1.0
    (y - t).abs().mean().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in net.parameters())
    # any multiple of 2**levels works, not only squares
    with torch.no_grad():
        assert net(x[:, :, :32, :], x[:, :, :32, :]).shape == (2, 3, 32, 64)


def test_tiny_eval_is_deterministic_and_uses_the_error() -> None:
    net = tiny().eval()
    x, t, r = faces(2, 64)
    err = HEARNet.heuristic_error(t, r)
    with torch.no_grad():
        y1, y2 = net(x, err), net(x, err)
        y0 = net(x, torch.zeros_like(err))
        y_single = net(x[:1], err[:1])
    assert torch.equal(y1, y2)
    assert float((y1 - y0).abs().max()) > 1e-4
    torch.testing.assert_close(y_single, y1[:1], rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_named() -> None:
    net = tiny()
    x, t, _ = faces(2, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        net(x[:, :, :48, :48], t[:, :, :48, :48])
    with pytest.raises(ValueError, match="must both be Nx3xHxW"):
        net(x, t[:1])


def test_save_reload_and_corrupted_file(tmp_path: Path) -> None:
    src, dst = tiny(0).eval(), tiny(1).eval()
    path = tmp_path / "hear_net.pth"
    torch.save(src.state_dict(), path)
    load_state_dict_file(dst, path)
    x, t, r = faces(2, 64)
    with torch.no_grad():
        assert torch.equal(src(x, t - r), dst(x, t - r))

    bad = dict(src.state_dict())
    bad["up2.deconv.weight"] = torch.zeros(1, 2, 4, 4)
    del bad["down3.1.running_mean"]
    torch.save(bad, tmp_path / "bad.pth")
    # the first problem in the model's key order is named
    with pytest.raises(
        ValueError, match=r"bad\.pth does not fit HEARNet: key 'down3\.1\.running_mean' is missing"
    ):
        load_state_dict_file(dst, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"1 missing, 0 unexpected, 1 mis-shaped"):
        load_state_dict_file(dst, tmp_path / "bad.pth")
    narrower = r"key 'down4\.0\.weight' has shape 64x32x4x4 in the file, 32x32x4x4 in the model"
    with pytest.raises(ValueError, match=narrower):
        load_state_dict_file(HEARNet(**TINY_HEAR_CONFIG, max_width=32), path)
