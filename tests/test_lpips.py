"""LPIPS v0.1 (VGG16) and MaskFaceGAN's masked variant: the heads shipped in lpips 0.1.4, the properties of
the distance, agreement with the package's own code, and the loader's errors. All on CPU at 64 px, with a
randomly initialised trunk (the ImageNet VGG16 file is user-supplied and not here)."""

from __future__ import annotations

import copy
import importlib
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import load_state_dict_file
from models.errors import ModelFileError
from models.lpips import (
    CHANNELS,
    LPIPS,
    VGG16Features,
    chained_area_masks,
    lin_file,
    load_lpips,
)
from models.weights import REGISTRY

SIZE = 64


def images(n: int, seed: int) -> torch.Tensor:
    """``(n, 3, SIZE, SIZE) float32`` RGB in [0, 1]."""
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def metric() -> LPIPS:
    """Our LPIPS: a random trunk (seed 0) and the package's heads, in eval mode."""
    torch.manual_seed(0)
    lpips = LPIPS()
    load_state_dict_file(lpips.heads(), lin_file())
    return lpips.eval().requires_grad_(False)


def test_package_heads_load_strictly():
    """lpips 0.1.4's ``weights/v0.1/vgg.pth`` (installed by the Makefile, never imported) fits the heads key
    for key; v0.1's calibrated weights are non-negative."""
    path = lin_file()
    assert path.parts[-4:] == ("lpips", "weights", "v0.1", "vgg.pth")
    lpips = LPIPS()
    load_state_dict_file(lpips.heads(), path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert list(state) == [f"lin{k}.model.1.weight" for k in range(5)]
    for k, channels in enumerate(CHANNELS):
        weight = getattr(lpips, f"lin{k}").model[1].weight
        assert weight.shape == (1, channels, 1, 1) and torch.equal(weight, state[f"lin{k}.model.1.weight"])
        assert weight.min() >= 0
    assert "lpips" not in sys.modules or not hasattr(sys.modules["lpips"], "LPIPS")  # found, not imported


def test_trunk_keeps_torchvision_layout():
    """``features.N`` convs at torchvision's indices; the registry drops the file's classifier."""
    keys = list(VGG16Features().state_dict())
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert keys == [f"features.{i}.{p}" for i in convs for p in ("weight", "bias")]
    assert set(LPIPS().state_dict()) == {f"net.{k}" for k in keys} | {
        f"lin{k}.model.1.weight" for k in range(5)
    }
    entry = REGISTRY["vgg16_imagenet"]
    assert entry.filename == "vgg16-397923af.pth" and entry.url is None
    assert sorted(entry.drop_keys) == sorted(
        f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")
    )


def test_identical_images_are_at_zero(metric):
    x = images(2, 1)
    with torch.no_grad():
        d = metric(x, x)
        masked = metric(x, x, torch.rand(2, 1, SIZE, SIZE))
    assert d.shape == (2, 1, 1, 1) and torch.equal(d, torch.zeros_like(d)) and torch.equal(masked, d)


def test_zero_mask_is_zero_and_ones_mask_is_the_plain_distance(metric):
    x0, x1 = images(2, 2), images(2, 3)
    with torch.no_grad():
        plain = metric(x0, x1)
        zero = metric(x0, x1, torch.zeros(2, 1, SIZE, SIZE))
        ones = metric(x0, x1, torch.ones(1, 1, SIZE, SIZE))  # one mask for all pairs
    assert (plain > 0).all()
    assert torch.equal(zero, torch.zeros_like(zero))
    torch.testing.assert_close(ones, plain, rtol=1e-6, atol=0)


def test_masked_distance_sees_a_change_only_under_the_mask(metric):
    """A change in the top-left corner: a mask over that quadrant keeps (nearly) all of the distance, a
    mask over the opposite quadrant (nearly) none; the unmasked distance is the quadrant's plus the rest."""
    x0 = images(2, 4)
    x1 = x0.clone()
    x1[:, :, 4:20, 4:20] = images(2, 5)[:, :, :16, :16]
    near = torch.zeros(2, 1, SIZE, SIZE)
    near[:, :, :32, :32] = 1
    far = near.flip(-1, -2)
    with torch.no_grad():
        plain, covered, elsewhere = metric(x0, x1), metric(x0, x1, near), metric(x0, x1, far)
    assert (covered > 0.9 * plain).all() and (covered <= plain * (1 + 1e-6)).all()
    assert (elsewhere < 0.01 * covered).all()


def test_layer_masks_are_resized_from_the_layer_before(metric):
    """MaskFaceGAN reassigns the mask each layer: layer k's is the area resize of layer k-1's. At 36 px the
    sides are 36, 18, 9, 4, 2, and 9 -> 4 differs from 36 -> 4. The masked distance uses the chained masks,
    checked with the heads of layers 0-2 zeroed: at 36 px the two deepest layers, where chained and direct
    masks differ (by 0.7 % of the distance here), carry too little of it otherwise."""
    mask = torch.rand(1, 1, 36, 36, generator=torch.Generator().manual_seed(6))
    sizes = [(36, 36), (18, 18), (9, 9), (4, 4), (2, 2)]
    chained = chained_area_masks(mask, sizes)
    for k in range(1, 5):
        torch.testing.assert_close(chained[k], F.interpolate(chained[k - 1], size=sizes[k], mode="area"))
    assert not torch.allclose(chained[3], F.interpolate(mask, size=(4, 4), mode="area"), rtol=0, atol=1e-4)

    x0 = torch.rand(1, 3, 36, 36, generator=torch.Generator().manual_seed(7))
    x1 = torch.rand(1, 3, 36, 36, generator=torch.Generator().manual_seed(8))
    deep = copy.deepcopy(metric)
    for k in range(3):
        getattr(deep, f"lin{k}").model[1].weight.zero_()
    with torch.no_grad():
        taps = [deep.net((2 * x - 1 - deep.shift) / deep.scale) for x in (x0, x1)]
        expected = 0
        for k, (f0, f1) in enumerate(zip(*taps)):
            unit0, unit1 = (f / (f.norm(dim=1, keepdim=True) + 1e-10) for f in (f0, f1))
            lin = getattr(deep, f"lin{k}").model[1].weight
            expected = expected + ((unit0 - unit1) ** 2 * chained[k] * lin).sum(1, keepdim=True).mean((2, 3))
        torch.testing.assert_close(deep(x0, x1, mask).view(1), expected.view(1), rtol=1e-5, atol=0)


@pytest.fixture
def package_lpips(metric):
    """The lpips package's own ``lpips.lpips`` module, importable without torchvision: a stub
    ``torchvision`` whose ``models.vgg16(pretrained=...)`` (the call in the package's
    ``pretrained_networks.vgg16``) returns an object whose ``.features`` is a copy of our trunk's
    ``features`` (same layers, same random weights). Removes the stub and every ``lpips`` module it imported
    afterwards."""

    def vgg16(*, pretrained: bool) -> types.SimpleNamespace:
        return types.SimpleNamespace(features=copy.deepcopy(metric.net.features))

    stub = types.ModuleType("torchvision")
    stub.models = types.ModuleType("torchvision.models")
    stub.models.vgg16 = vgg16
    saved = {name: sys.modules.get(name) for name in ("torchvision", "torchvision.models")}
    before = set(sys.modules)
    sys.modules["torchvision"], sys.modules["torchvision.models"] = stub, stub.models
    try:
        yield importlib.import_module("lpips.lpips")
    finally:
        for name in set(sys.modules) - before:
            if name == "lpips" or name.startswith("lpips."):
                del sys.modules[name]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_same_function_as_the_package(metric, package_lpips):
    """Ours against lpips 0.1.4's ``LPIPS(pretrained=True, net='vgg', version='0.1')`` (its heads from its
    own file, its trunk our random one through the stub), on random images in [0, 1] (``normalize=True``)
    and in [-1, 1]: max|ours - ref| / max|ref| <= 1e-5. Unmasked only: the PyPI package's forward has no
    mask argument (the masked variant is MaskFaceGAN's edit of that file)."""
    ref = package_lpips.LPIPS(pretrained=True, net="vgg", version="0.1", verbose=False)
    assert "mask" not in ref.forward.__code__.co_varnames
    x0, x1 = images(3, 9), images(3, 10)
    errors = []
    with torch.no_grad():
        for a, b, normalize in ((x0, x1, True), (2 * x0 - 1, 2 * x1 - 1, False)):
            expected = ref(a, b, normalize=normalize)
            ours = metric(a, b, normalize=normalize)
            assert ours.shape == expected.shape == (3, 1, 1, 1) and (expected > 0).all()
            errors.append(float((ours - expected).abs().max() / expected.abs().max()))
    print(f"max relative error against lpips 0.1.4: {max(errors):.2e}")
    assert max(errors) <= 1e-5


def test_missing_trunk_file_is_one_line(tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_lpips(tmp_path)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "vgg16-397923af.pth" in msg and str(tmp_path) in msg


def test_missing_package_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real(name, *a)
    )
    with pytest.raises(ModelFileError) as err:
        load_lpips("unused")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "vgg.pth" in msg and "pip install --no-deps lpips==0.1.4" in msg


def test_load_lpips_reads_both_files_strictly(tmp_path):
    """A trunk file as torchvision saves it (features plus the classifier entries, dropped; tiny stand-ins
    here) loads; the result is frozen, in eval mode, and still differentiable in its inputs."""
    torch.manual_seed(11)
    trunk = VGG16Features()
    state = trunk.state_dict()
    state.update({f"classifier.{i}.{p}": torch.zeros(1) for i in (0, 3, 6) for p in ("weight", "bias")})
    torch.save(state, tmp_path / "vgg16-397923af.pth")
    lpips = load_lpips(tmp_path)
    assert not lpips.training and not any(p.requires_grad for p in lpips.parameters())
    assert all(torch.equal(v, trunk.state_dict()[k]) for k, v in lpips.net.state_dict().items())
    heads = torch.load(lin_file(), map_location="cpu", weights_only=True)
    assert all(torch.equal(v, heads[k]) for k, v in lpips.heads().state_dict().items())
    x0, x1 = images(1, 12).requires_grad_(True), images(1, 13)
    lpips(x0, x1).sum().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
