"""The adaptive-latent StyleGAN2 swap (models/latent_swap.py, stages/swap_latent.py): the networks' wiring,
and ``swap.backend=latent`` with tiny random networks on a shared clip (frames, timestamps, audio and tag)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.latent_swap import AdaptiveLatentSwap, LatentSwapNet
from models.weights import REGISTRY, build_network, layout_of
from pipeline.config import CONFIG_DIR, load_config

TINY_LATENT = [
    "stylegan2.size=64",
    "stylegan2.style_dim=32",
    "stylegan2.n_mlp=2",
    "stylegan2.max_channels=32",
    "latent.layout.stages=[[16,1],[16,1],[32,1],[32,1]]",
    "latent.layout.n_styles=10",
    "latent.layout.input_size=64",
    "latent.layout.mask_width=8",
    "latent.layout.gate_hidden=16",
    "align.crop_size=64",
    "align.min_crop_size=64",
]


def test_gates_start_even_and_mix_row_by_row() -> None:
    torch.manual_seed(0)
    swap = AdaptiveLatentSwap(n_latent=4, dim=8, hidden=16)
    ws, wt = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    w, gates = swap(ws, wt)
    assert torch.allclose(gates, torch.full_like(gates, 0.5)) and torch.allclose(w, (ws + wt) / 2)
    with torch.no_grad():  # row 1 all source, row 2 all target
        swap.gates[1][2].bias.fill_(30.0)
        swap.gates[2][2].bias.fill_(-30.0)
    w, _ = swap(ws, wt)
    assert torch.allclose(w[:, 1], ws[:, 1]) and torch.allclose(w[:, 2], wt[:, 2])


def test_encoder_gives_codes_and_a_mask_of_the_crop() -> None:
    layout = {
        "stages": ((16, 1), (16, 1), (32, 1), (32, 1)),
        "n_styles": 10,
        "input_size": 64,
        "mask_width": 8,
    }
    net = LatentSwapNet(gate_hidden=16, **layout)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    w, mask, gates, w_source = net(x, x.flip(0))
    assert w.shape == gates.shape == w_source.shape == (3, 10, 32) and mask.shape == (3, 1, 64, 64)
    net.eval()
    w_same, _, _, _ = net(x, x)  # a face swapped with itself keeps its own code, whatever the gates
    assert torch.allclose(w_same, net.encoder(x)[0], atol=1e-5)
    big = net.encoder(torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear"))[1]
    assert big.shape == (3, 1, 64, 64)  # another crop size is area-resized to the encoder's input


@pytest.mark.slow
def test_latent_backend_end_to_end_with_tiny_random_networks(data_dir: Path, tmp_path: Path) -> None:
    from tests.media_checks import check_backend_end_to_end

    weights = tmp_path / "weights"
    weights.mkdir()
    overrides = [f"weights.dir={weights}", "executor=local", *TINY_LATENT]
    cfg = load_config(CONFIG_DIR / "latent.yaml", overrides)
    torch.manual_seed(0)
    for name in ("stylegan2_ffhq", "latent_swap"):
        entry = REGISTRY[name]
        state = build_network(entry.network, layout_of(name, cfg)).state_dict()
        torch.save({entry.state_key: state} if entry.state_key else state, weights / entry.filename)
    # the FFHQ crop reaches well beyond MTCNN's box; without configs/latent.yaml the crop is refused
    check_backend_end_to_end(data_dir, tmp_path, "latent", overrides, grow=1.0)


def test_codes_are_smoothed_along_a_track_and_restart_at_cuts_and_gaps() -> None:
    from stages.scene import TrackMemory

    memory = TrackMemory()
    a = 0.5
    assert memory.smooth("v", 3, 0, False, torch.tensor(4.0), a) == 4.0  # a new track starts at its code
    assert memory.smooth("v", 3, 1, False, torch.tensor(0.0), a) == 2.0
    assert memory.smooth("v", 3, 2, True, torch.tensor(8.0), a) == 8.0  # a scene cut restarts it
    assert memory.smooth("v", 3, 4, False, torch.tensor(0.0), a) == 0.0  # so does a gap (frame 3 missing)
    assert memory.smooth("v", -1, 5, False, torch.tensor(6.0), a) == 6.0  # an untracked face keeps nothing
    assert memory.smooth("w", 3, 5, False, torch.tensor(1.0), a) == 1.0  # another video's track 3
