"""WSC-swap end to end on CPU: a tiny training run on crops of the shared photos (its reconstruction, its
identity probe against a run without the identity-removal loss), the exported generator through the weight
registry, and ``swap.backend=wsc`` on a shared clip (frames, timestamps, audio and tag)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import ConfigError, ModelFileError
from models.weights import load_network
from models.wsc_net import TINY_WSC_CONFIG, WSCGenerator
from pipeline.config import CONFIG_DIR, load_config
from pipeline.training.loop import train
from tests.training.conftest import tiny_cfg

WSC_STEPS = 60
TINY_LAYOUT = [f"wsc.{k}={v}" for k, v in TINY_WSC_CONFIG.items()]


def _run(face_crops: Path, out: Path, *overrides: str) -> list[dict]:
    before = torch.get_num_threads()
    cfg = tiny_cfg(
        f"train.steps={WSC_STEPS}",
        f"train.checkpoint_every={WSC_STEPS}",
        f"train.sample_every={WSC_STEPS}",
        "train.same_identity_share=0.75",  # 3 in 4 reconstruction pairs: the face learns in 60 steps
        *overrides,
    )
    history = train("wsc", face_crops, out, cfg)
    torch.set_num_threads(before)
    return history


@pytest.fixture(scope="module")
def wsc_run(face_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("wsc")
    return out, _run(face_crops, out)


def _mean(history: list[dict], key: str, part: slice) -> float:
    return float(np.mean([e[key] for e in history][part]))


@pytest.mark.slow
def test_tiny_wsc_learns_to_reconstruct_and_writes_its_files(wsc_run: tuple[Path, list[dict]]) -> None:
    out, history = wsc_run
    assert [e["step"] for e in history] == list(range(1, WSC_STEPS + 1))
    keys = ("g", "adv", "id", "rec", "outside", "3dmm", "removal", "probe", "probe_acc", "d")
    assert all(np.isfinite(e[k]) for e in history for k in keys)
    rec = [e["rec"] for e in history if e["same"] > 0]
    first, last = float(np.mean(rec[:5])), float(np.mean(rec[-5:]))
    print(f"tiny WSC rec loss: first 5 {first:.4f}, last 5 {last:.4f} over {WSC_STEPS} steps")
    assert last <= 0.5 * first, (first, last)
    state = torch.load(
        out / "checkpoints" / f"step_{WSC_STEPS:07d}.pt", map_location="cpu", weights_only=True
    )
    assert state["kind"] == "wsc" and {"model", "probe", "discriminator", "probe_optimizer"} <= set(state)
    assert (out / "samples" / f"step_{WSC_STEPS:07d}.png").is_file()
    lines = (out / "scalars.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, WSC_STEPS + 1))


@pytest.mark.slow
def test_identity_removal_keeps_the_probe_at_chance(
    wsc_run: tuple[Path, list[dict]], face_crops: Path, tmp_path: Path
) -> None:
    """The probe (trained every step to name each code's identity among the batch's) stays near chance,
    log B, when the encoder is trained against it; without the removal loss the same probe learns to tell
    the codes' identities apart."""
    _, history = wsc_run
    control = _run(face_crops, tmp_path / "control", "train.wsc_lambda_removal=0")
    chance = float(np.log(4))  # train_tiny's batch of 4
    late = slice(-20, None)
    with_removal, without = _mean(history, "probe", late), _mean(control, "probe", late)
    print(
        f"probe loss over the last 20 steps: {with_removal:.3f} with removal, {without:.3f} without; "
        f"chance {chance:.3f}"
    )
    assert with_removal >= 0.9 * chance
    assert without <= with_removal - 0.15, (with_removal, without)


@pytest.mark.slow
def test_exported_generator_loads_strictly_through_the_registry(wsc_run: tuple[Path, list[dict]]) -> None:
    out, _ = wsc_run
    net = load_network("wsc_generator", out, layout=dict(TINY_WSC_CONFIG))
    state = torch.load(
        out / "checkpoints" / f"step_{WSC_STEPS:07d}.pt", map_location="cpu", weights_only=True
    )
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state["model"][k])
    assert isinstance(net, WSCGenerator) and not net.training
    with pytest.raises(ValueError, match="wsc_generator.pth does not fit WSCGenerator.*wsc: section"):
        load_network("wsc_generator", out, layout={**TINY_WSC_CONFIG, "base": 16})


def test_train_wsc_names_the_files_it_needs(tmp_path: Path) -> None:
    """Without train.tiny the identity encoder and the 3DMM regressor are user files: one-line errors."""
    from pipeline.training.recipes.wsc import WSCRecipe

    cfg = load_config(None, [f"weights.dir={tmp_path}"])
    arch = WSCRecipe.architecture(cfg)
    assert arch["size"] == 256 and arch["wsc"]["base"] == 48
    with pytest.raises(ModelFileError, match="frozen identity encoder.*backbone.pth"):
        WSCRecipe.check_files(arch, cfg)
    torch.save({}, tmp_path / "backbone.pth")
    with pytest.raises(ModelFileError, match="3DMM loss.*epoch_20.pth"):
        WSCRecipe.check_files(arch, cfg)
    WSCRecipe.check_files(arch, load_config(None, [f"weights.dir={tmp_path}", "train.wsc_lambda_3dmm=0"]))
    with pytest.raises(ConfigError, match="wsc: "):
        WSCRecipe.architecture(load_config(None, ["wsc.code_size=64"]))


@pytest.mark.slow
def test_wsc_backend_end_to_end(wsc_run: tuple[Path, list[dict]], data_dir: Path, tmp_path: Path) -> None:
    """``--config configs/wsc.yaml`` with the tiny run's generator and a random ArcFace: every frame and
    timestamp, the audio packets and the synthetic tag kept; the face changed, the background not; the crop
    the generator was trained on is required, with a one-line error."""
    from models.arcface import iresnet50
    from tests.media_checks import check_backend_end_to_end

    out_dir, _ = wsc_run
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "wsc_generator.pth").write_bytes((out_dir / "wsc_generator.pth").read_bytes())
    torch.manual_seed(0)
    torch.save(iresnet50().state_dict(), weights / "arcface_r50_backbone.pth")
    overrides = [
        f"weights.dir={weights}",
        "executor=local",
        "wsc.arcface=arcface_iresnet50",
        "align.crop_size=64",
        *TINY_LAYOUT,
    ]
    check_backend_end_to_end(data_dir, tmp_path, "wsc", overrides)


def test_missing_wsc_generator_is_a_one_line_error(data_dir: Path, tmp_path: Path, capsys) -> None:
    from pipeline.__main__ import main

    empty = tmp_path / "weights"
    empty.mkdir()
    args = ["swap", "--input", str(data_dir / "videos" / "liveportrait_d20.mp4")]
    args += ["--source", str(data_dir / "faces" / "obama_a.jpg"), "--output", str(tmp_path / "o.mp4")]
    code = main([*args, "--config", str(CONFIG_DIR / "wsc.yaml"), f"weights.dir={empty}", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "wsc_generator.pth" in err and str(empty) in err and "train wsc" in err
    assert not (tmp_path / "o.mp4").exists()
