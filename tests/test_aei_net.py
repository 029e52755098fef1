"""AEI-Net: GHOST checkpoint layout (interop table), strict file loading, tiny-config forward/backward."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.aei_net import TINY_AEI_CONFIG, AEINet
from models.checkpoints import load_state_dict_file
from models.errors import ModelFileError
from tests.model_fixtures import interop_table

GHOST_ATTR_SHAPES = [
    (1024, 2, 2),
    (2048, 4, 4),
    (1024, 8, 8),
    (512, 16, 16),
    (256, 32, 32),
    (128, 64, 64),
    (64, 128, 128),
    (64, 256, 256),
]


def table_rows() -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype) per line of the GHOST AEI-Net interop table, in state_dict order."""
    return interop_table("ghost_aei_unet_2blocks.tsv")


@pytest.fixture(autouse=True)
def single_thread_for_tiny(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tiny network runs many small ops: one thread avoids OpenMP stalls on a shared CPU."""
    before = torch.get_num_threads()
    if "full" not in request.fixturenames:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def full() -> AEINet:
    """The default (GHOST, 256 px) network, built once: ~0.7 GB."""
    torch.manual_seed(0)
    return AEINet().eval()


def tiny(seed: int = 0) -> AEINet:
    torch.manual_seed(seed)
    return AEINet(**TINY_AEI_CONFIG)


def inputs(n: int, size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Target ``(n, 3, size, size)`` in [-1, 1] and a raw-ArcFace-like identity ``(n, 512)`` (norm ~20)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1, torch.randn(n, 512, generator=g)


# --------------------------------------------------------------------------------------------- full size


def test_state_dict_matches_ghost_table(full: AEINet) -> None:
    mine = [(k, tuple(v.shape), v.dtype) for k, v in full.state_dict().items()]
    rows = table_rows()
    assert len(mine) == len(rows) == 311
    for got, want in zip(mine, rows):
        assert got == want
    assert sum(p.numel() for p in full.parameters()) == 184_343_381
    assert sum(p.numel() for p in full.encoder.parameters()) == 67_087_744
    assert sum(p.numel() for p in full.generator.parameters()) == 117_255_637
    assert full.attribute_shapes() == GHOST_ATTR_SHAPES


def test_ghost_shaped_file_loads_strictly(full: AEINet, tmp_path: Path) -> None:
    # A file with exactly the table's keys, shapes and dtypes (stride-0 views: the file stays tiny).
    fake = {k: torch.full((), 0.5, dtype=dt).expand(shape) for k, shape, dt in table_rows()}
    path = tmp_path / "G_unet_2blocks.pth"
    torch.save(fake, path)
    backup = {k: v.clone() for k, v in full.state_dict().items()}
    try:
        load_state_dict_file(full, path)
        assert bool((full.generator.AADBlk8.last_add_block[2].weight == 0.5).all())
        assert int(full.encoder.conv1[1].num_batches_tracked) == 0  # int64 0.5 → 0
    finally:
        full.load_state_dict(backup)


def test_full_forward_batch1(full: AEINet) -> None:
    x, z = inputs(1, 256)
    with torch.inference_mode():
        y, attrs = full(x, z)
    assert y.shape == (1, 3, 256, 256) and y.dtype == torch.float32
    assert bool(torch.isfinite(y).all()) and float(y.abs().max()) <= 1.0
    assert [tuple(a.shape[1:]) for a in attrs] == GHOST_ATTR_SHAPES
    assert all(a.shape[0] == 1 for a in attrs)


# --------------------------------------------------------------------------------------------- tiny


def test_tiny_config_is_small_and_consistent() -> None:
    net = tiny()
    assert sum(p.numel() for p in net.parameters()) == 715_134
    assert net.attribute_shapes() == [
        (32, 2, 2),
        (64, 4, 4),
        (64, 8, 8),
        (32, 16, 16),
        (16, 32, 32),
        (16, 64, 64),
    ]


def test_tiny_forward_shapes_and_range() -> None:
    net = tiny()
    x, z = inputs(2, 64)
    y, attrs = net(x, z)  # training mode: BatchNorm uses batch statistics
    assert y.shape == (2, 3, 64, 64) and float(y.detach().abs().max()) <= 1.0
    assert [tuple(a.shape) for a in attrs] == [(2, *s) for s in net.attribute_shapes()]
    up = F.interpolate(attrs[-2], scale_factor=2.0, mode="bilinear", align_corners=True)
    torch.testing.assert_close(attrs[-1], up)
    assert all(torch.equal(p, q) for p, q in zip(net.get_attributes(x), attrs))


def test_tiny_eval_is_deterministic_and_identity_matters() -> None:
    net = tiny().eval()
    x, z = inputs(2, 64)
    with torch.no_grad():
        y1, a1 = net(x, z)
        y2, a2 = net(x, z)
        y3, _ = net(x, torch.flip(z, dims=[0]))
        attrs = net.get_attributes(x)
    assert torch.equal(y1, y2) and all(torch.equal(p, q) for p, q in zip(a1, a2))
    assert all(torch.equal(p, q) for p, q in zip(a1, attrs))
    assert float((y1 - y3).abs().max()) > 1e-4  # another identity gives another face
    # batch composition does not change a sample's result in eval mode
    with torch.no_grad():
        y_single, _ = net(x[:1], z[:1])
    torch.testing.assert_close(y_single, y1[:1], rtol=1e-4, atol=1e-5)


def test_tiny_backward_reaches_every_parameter() -> None:
    net = tiny()
    x, z = inputs(2, 64)
    y, attrs = net(x, z)
    (y.square().mean() + sum(a.mean() for a in attrs)).backward()
    no_grad = [
        n for n, p in net.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())
    ]
    assert no_grad == []


def test_bad_input_shapes_are_named() -> None:
    net = tiny()
    x, z = inputs(2, 64)
    with pytest.raises(ValueError, match="target must be Nx3x64x64"):
        net(x[:, :, :32, :32], z)
    with pytest.raises(ValueError, match="id_embedding must be Nx512"):
        net(x, z[:, :256])
    with pytest.raises(ValueError, match="batch sizes differ"):
        net(x, z[:1])
    with pytest.raises(ValueError, match="power of two"):
        AEINet(size=96)


# --------------------------------------------------------------------------------------------- files


def test_save_and_reload_strict(tmp_path: Path) -> None:
    src, dst = tiny(0).eval(), tiny(1).eval()
    path = tmp_path / "aei.pth"
    torch.save(src.state_dict(), path)
    assert torch.load(path, weights_only=True).keys() == src.state_dict().keys()
    assert load_state_dict_file(dst, path) is dst
    x, z = inputs(2, 64)
    with torch.no_grad():
        assert torch.equal(src(x, z)[0], dst(x, z)[0])


def test_corrupted_files_name_the_key(tmp_path: Path) -> None:
    net = tiny()
    good = {k: v.clone() for k, v in net.state_dict().items()}
    key = "generator.AADBlk3.add_blocks.3.fc1.weight"

    wrong = dict(good)
    wrong[key] = torch.zeros(5, 5)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=rf"wrong\.pth does not fit AEINet: key '{key}' has shape 5x5") as e:
        load_state_dict_file(net, tmp_path / "wrong.pth")
    assert "\n" not in str(e.value)

    missing = {k: v for k, v in good.items() if k != "encoder.deconv2.bn.running_var"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing\.pth .*'encoder\.deconv2\.bn\.running_var' is missing"):
        load_state_dict_file(net, tmp_path / "missing.pth")

    extra = {**good, "generator.AADBlk9.x": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"'generator\.AADBlk9\.x' is not in the model"):
        load_state_dict_file(net, tmp_path / "extra.pth")

    torch.save({"state_dict": good, "epoch": 3}, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match=r"wrapped\.pth: expected a plain state_dict.*'state_dict'"):
        load_state_dict_file(net, tmp_path / "wrapped.pth")

    prefixed = {f"module.{k}": v for k, v in good.items()}
    torch.save(prefixed, tmp_path / "prefixed.pth")
    with pytest.raises(ValueError, match=r"'encoder\.conv1\.0\.weight' is missing.*'module\.' prefix"):
        load_state_dict_file(net, tmp_path / "prefixed.pth")

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth: not a weights-only torch file"):
        load_state_dict_file(net, tmp_path / "garbage.pth")

    with pytest.raises(ModelFileError, match="absent.pth"):
        load_state_dict_file(net, tmp_path / "absent.pth")

    # nothing was loaded by the failed attempts
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in good.items())
