"""The adaptive-latent swap's training on CPU: a tiny run (64 px random frozen StyleGAN2, tiny encoder) on
FFHQ crops of the shared photos, its exported file through the weight registry, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import ModelFileError
from models.weights import load_network
from pipeline.training.loop import train
from tests.test_latent_swap import TINY_LATENT
from tests.training.conftest import tiny_cfg

STEPS = 150  # the identity term needs about this many to halve
TINY_LAYOUT = [o for o in TINY_LATENT if not o.startswith("align.")]


@pytest.fixture(scope="module")
def latent_run(ffhq_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("latent")
    cfg = tiny_cfg(
        *TINY_LAYOUT,
        f"train.steps={STEPS}",
        f"train.checkpoint_every={STEPS}",
        f"train.sample_every={STEPS}",
        "train.same_identity_share=0.5",
    )
    return out, train("latent", ffhq_crops, out, cfg)


def _mean(history: list[dict], key: str, part: slice) -> float:
    values = [
        r[key] for r in history[part] if r[key] == r[key]
    ]  # id_swap is NaN on an all-reconstruction batch
    return float(np.mean(values))


@pytest.mark.slow
def test_tiny_latent_run_learns_reconstruction_and_the_mask(latent_run: tuple[Path, list[dict]]) -> None:
    out, history = latent_run
    assert len(history) == STEPS
    first, last = slice(0, 10), slice(-10, None)
    assert _mean(history, "l2", last) <= 0.5 * _mean(history, "l2", first)
    assert _mean(history, "lpips", last) < _mean(history, "lpips", first)
    assert _mean(history, "mask_iou", last) > _mean(history, "mask_iou", first) + 0.1
    assert _mean(history, "id", last) <= 0.5 * _mean(history, "id", first)
    assert _mean(history, "id_swap", last) < 0.8 * _mean(history, "id_swap", first)
    assert (out / "latent_swap.pth").is_file()


@pytest.mark.slow
def test_exported_latent_swap_loads_strictly_through_the_registry(
    latent_run: tuple[Path, list[dict]],
) -> None:
    from pipeline.config import load_config

    out, _ = latent_run
    cfg = load_config(None, TINY_LAYOUT)
    net = load_network("latent_swap", out, layout=dict(cfg["latent"]["layout"]))
    assert float(net.encoder.latent_avg.abs().sum()) > 0  # the generator's mean W was stored with it
    with pytest.raises(ValueError, match="latent_swap.pth.*latent.layout: section"):
        load_network("latent_swap", out, layout={**cfg["latent"]["layout"], "mask_width": 16})


def test_train_latent_names_the_files_it_needs(tmp_path: Path) -> None:
    """Without train.tiny the generator, the identity encoder, the 3DMM regressor and the LPIPS trunk are user
    files: one-line errors naming each; a layout that does not fit the generator is refused."""
    from models.errors import ConfigError
    from pipeline.config import load_config
    from pipeline.training.recipes.latent import LatentRecipe

    cfg = load_config(None, [f"weights.dir={tmp_path}"])
    arch = LatentRecipe.architecture(cfg)
    assert arch["size"] == 256 and arch["latent"]["n_styles"] == 18
    expected = [
        ("frozen StyleGAN2 generator.*stylegan2-ffhq-config-f.pt", "stylegan2-ffhq-config-f.pt"),
        ("frozen identity encoder.*backbone.pth", "backbone.pth"),
        ("attribute loss.*epoch_20.pth", "epoch_20.pth"),
        ("LPIPS loss.*vgg16-397923af.pth", "vgg16-397923af.pth"),
    ]
    for message, filename in expected:
        with pytest.raises(ModelFileError, match=message):
            LatentRecipe.check_files(arch, cfg)
        torch.save({}, tmp_path / filename)
    LatentRecipe.check_files(arch, cfg)
    with pytest.raises(ConfigError, match="n_styles = 18"):
        LatentRecipe.architecture(load_config(None, ["latent.layout.n_styles=14"]))
