"""The checkpoint registry: locating files, hash checks, strict loading into the named network."""

from __future__ import annotations

import pytest
import torch

from models.errors import ModelFileError
from models.files import sha256_of
from models.hear_net import HEARNet
from models.weights import REGISTRY, load_network, locate


def test_registry_entries_are_complete():
    for name, entry in REGISTRY.items():
        assert entry.name == name and entry.filename and entry.obtain
        assert entry.crop_size in (112, 128, 224, 256, 512, 1024)
    assert REGISTRY["aei_net"].crop_size == 256 and REGISTRY["arcface_iresnet100"].crop_size == 112


def test_missing_file_names_file_folder_and_remedy(tmp_path):
    with pytest.raises(ModelFileError) as err:
        locate("hear_net", tmp_path)
    msg = str(err.value)
    assert "hear_net.pth" in msg and str(tmp_path) in msg and "train" in msg
    with pytest.raises(ModelFileError, match="make weights"):
        locate("aei_net", tmp_path)
    with pytest.raises(ModelFileError, match="unknown model"):
        locate("simswap", tmp_path)


def test_hash_is_checked_when_known(tmp_path):
    torch.manual_seed(1)
    net = HEARNet()
    torch.save(net.state_dict(), tmp_path / "hear_net.pth")
    digest = sha256_of(tmp_path / "hear_net.pth")
    assert locate("hear_net", tmp_path, expected_sha256=digest) == tmp_path / "hear_net.pth"
    with pytest.raises(ModelFileError, match="does not match"):
        locate("hear_net", tmp_path, expected_sha256="0" * 64)
    loaded = load_network("hear_net", tmp_path, expected_sha256=digest)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    net.eval()
    with torch.inference_mode():
        assert torch.equal(loaded(x, x * 0.1), net(x, x * 0.1))


def test_truncated_file_is_a_one_line_error(tmp_path):
    torch.save(HEARNet().state_dict(), tmp_path / "hear_net.pth")
    data = (tmp_path / "hear_net.pth").read_bytes()
    (tmp_path / "hear_net.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        load_network("hear_net", tmp_path)
    assert "hear_net.pth" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_pinned_hash_from_config_is_enforced(tmp_path, base_cfg):
    import copy

    from models.weights import load_configured

    torch.save(HEARNet().state_dict(), tmp_path / "hear_net.pth")
    cfg = copy.deepcopy(base_cfg)
    cfg["weights"]["dir"] = str(tmp_path)
    cfg["weights"]["sha256"]["hear_net"] = sha256_of(tmp_path / "hear_net.pth")
    assert load_configured("hear_net", cfg) is not None
    cfg["weights"]["sha256"]["hear_net"] = "f" * 64
    with pytest.raises(ModelFileError, match="does not match"):
        load_configured("hear_net", cfg)


def test_state_key_unwraps_only_the_named_entry(tmp_path):
    """A file the registry marks as wrapped (Deep3DFaceRecon's {"net_recon": ...}) loads its inner dict;
    without the key, or with another key, it is refused."""
    from models.checkpoints import load_state_dict_file

    net = torch.nn.Linear(3, 2)
    path = tmp_path / "wrapped.pth"
    torch.save({"net_recon": net.state_dict(), "epoch": torch.tensor(20)}, path)
    fresh = load_state_dict_file(torch.nn.Linear(3, 2), path, state_key="net_recon")
    assert torch.equal(fresh.weight, net.weight)
    with pytest.raises(ValueError, match="wrapper dict"):
        load_state_dict_file(torch.nn.Linear(3, 2), path)
    with pytest.raises(ValueError, match="'model' state_dict entry"):
        load_state_dict_file(torch.nn.Linear(3, 2), path, state_key="model")


def test_drop_keys_remove_only_the_named_entries(tmp_path):
    """MaskFaceGAN's parser file keeps its loss's class weights beside the network (``loss.weight``); the
    registry drops exactly that entry before the strict load, and a file without it is not the one named."""
    import torch
    from torch import nn

    from models.checkpoints import load_state_dict_file
    from models.errors import WeightFileError

    net = nn.Linear(2, 3)
    path = tmp_path / "state.pt"
    torch.save({**net.state_dict(), "loss.weight": torch.ones(9)}, path)
    load_state_dict_file(nn.Linear(2, 3), path, drop_keys=("loss.weight",))
    with pytest.raises(WeightFileError, match="not in the model"):
        load_state_dict_file(nn.Linear(2, 3), path)
    torch.save(net.state_dict(), path)
    with pytest.raises(WeightFileError, match="'loss.weight'"):
        load_state_dict_file(nn.Linear(2, 3), path, drop_keys=("loss.weight",))
    assert REGISTRY["maskfacegan_parser"].drop_keys == ("loss.weight",)
