"""The generic training loop (pipeline/training/loop.py) and the train command on FaceShifter's recipes:
config and data errors, tiny AEI-Net / HEAR-Net runs on crops of the shared photos (checkpoints, exports,
logs, resume, Ray Train)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.aei_net import TINY_AEI_CONFIG, AEINet
from models.checkpoints import load_state_dict_file
from models.errors import ConfigError, ModelFileError
from models.hear_net import TINY_HEAR_CONFIG, HEARNet
from pipeline.config import load_config
from pipeline.training.loop import latest_checkpoint, read_scalars, train
from pipeline.training.train import main
from tests.training.conftest import TINY_CONFIG, tiny_cfg, write_crops

AEI_STEPS = 30


def test_main_refuses_missing_or_empty_data_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["aei", "--data", str(tmp_path / "missing"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: error:") and "no such folder" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert (
        main(["aei", "--data", str(tmp_path / "empty"), "--out", str(out), "--config", str(TINY_CONFIG)]) == 2
    )
    assert "prepare-faces" in capsys.readouterr().err
    assert not out.exists()


def test_config_errors_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crops = write_crops(tmp_path / "crops", 2, 64)
    with pytest.raises(ConfigError, match="train.size=64"):
        train("aei", crops, tmp_path / "a", tiny_cfg("train.size=128"))
    with pytest.raises(ConfigError, match="aei_checkpoint"):
        train("hear", crops, tmp_path / "h", tiny_cfg())
    # A HEAR-Net file is not an AEI-Net: the strict load names the first key.
    wrong = tmp_path / "wrong.pth"
    torch.save(HEARNet(**TINY_HEAR_CONFIG).state_dict(), wrong)
    args = ["hear", "--data", str(crops), "--out", str(tmp_path / "h"), "--config", str(TINY_CONFIG)]
    assert main([*args, f"train.aei_checkpoint={wrong}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train.aei_checkpoint" in err and "key" in err
    # The full-size configuration needs the user's ArcFace weights.
    full = load_config(None, [f"weights.dir={tmp_path / 'no_weights'}", "train.size=64"])
    with pytest.raises(ModelFileError, match="identity encoder"):
        train("aei", crops, tmp_path / "f", full)


# --------------------------------------------------------------------------------------------- tiny runs


@pytest.fixture(scope="module")
def aei_run(face_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A tiny AEI-Net run: AEI_STEPS steps, half of the samples reconstruction pairs."""
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("aei")
    cfg = tiny_cfg(
        f"train.steps={AEI_STEPS}",
        "train.checkpoint_every=10",
        "train.sample_every=15",
        "train.same_identity_share=0.5",
    )
    history = train("aei", face_crops, out, cfg)
    torch.set_num_threads(before)
    return out, history


@pytest.mark.slow
def test_tiny_aei_learns_to_reconstruct_and_writes_its_files(aei_run: tuple[Path, list[dict]]) -> None:
    out, history = aei_run
    assert [e["step"] for e in history] == list(range(1, AEI_STEPS + 1))
    assert all(np.isfinite(e[k]) for e in history for k in ("g", "adv", "att", "id", "rec", "d"))
    rec = [e["rec"] for e in history if e["same"] > 0]
    first, last = float(np.mean(rec[:5])), float(np.mean(rec[-5:]))
    print(f"tiny AEI rec loss: first 5 {first:.4f}, last 5 {last:.4f} over {AEI_STEPS} steps")
    assert last <= 0.5 * first, (first, last)

    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_0000010.pt",
        "step_0000020.pt",
        "step_0000030.pt",
    ]
    state = torch.load(out / "checkpoints" / "step_0000030.pt", map_location="cpu", weights_only=True)
    assert state["step"] == AEI_STEPS and state["kind"] == "aei"
    assert {"model", "optimizer", "discriminator", "disc_optimizer", "rng"} <= set(state)
    net = load_state_dict_file(AEINet(**TINY_AEI_CONFIG), out / "G_unet_2blocks.pth")
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state["model"][k])

    lines = (out / "scalars.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, AEI_STEPS + 1))
    assert list((out / "logs").glob("events.out.tfevents.*"))
    with Image.open(out / "samples" / "step_0000030.png") as im:
        assert im.mode == "RGB" and im.size[1] == 3 * 64 and im.size[0] % 64 == 0
    assert (out / "samples" / "step_0000015.png").is_file()


@pytest.mark.slow
def test_tiny_aei_resumes_from_its_checkpoint(
    aei_run: tuple[Path, list[dict]], face_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(aei_run[0], out)
    cfg = tiny_cfg(f"train.steps={AEI_STEPS + 2}", "train.checkpoint_every=10", "train.sample_every=15")
    history = train("aei", face_crops, out, cfg)
    assert [e["step"] for e in history] == [AEI_STEPS + 1, AEI_STEPS + 2]
    assert latest_checkpoint(out) == out / "checkpoints" / f"step_{AEI_STEPS + 2:07d}.pt"
    assert [e["step"] for e in read_scalars(out)] == list(range(1, AEI_STEPS + 3))
    # Already at train.steps: nothing left to train (through the command line).
    args = ["aei", "--data", str(face_crops), "--out", str(out), "--config", str(TINY_CONFIG), "--quiet"]
    assert main([*args, f"train.steps={AEI_STEPS + 2}"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(face_crops: Path, tmp_path: Path) -> None:
    """Same seed, same steps: a run stopped at step 2 and resumed gives step 3 exactly as a run in one go."""
    common = ("train.checkpoint_every=1", "train.sample_every=100", "train.same_identity_share=0.5")
    whole = train("aei", face_crops, tmp_path / "whole", tiny_cfg("train.steps=3", *common))
    first = train("aei", face_crops, tmp_path / "parts", tiny_cfg("train.steps=2", *common))
    rest = train("aei", face_crops, tmp_path / "parts", tiny_cfg("train.steps=3", *common))

    def losses(entries: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]

    assert losses(first + rest) == losses(whole)


@pytest.mark.slow
def test_tiny_hear_trains_on_the_exported_aei(
    aei_run: tuple[Path, list[dict]], face_crops: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hear"
    aei = aei_run[0] / "G_unet_2blocks.pth"
    cfg = tiny_cfg("train.steps=3", "train.sample_every=3", f"train.aei_checkpoint={aei}")
    history = train("hear", face_crops, out, cfg)
    assert [e["step"] for e in history] == [1, 2, 3]
    assert all(set(e) == {"step", "g", "id", "chg", "rec", "same", "seconds"} for e in history)
    assert all(np.isfinite(e["g"]) for e in history)
    state = torch.load(out / "checkpoints" / "step_0000003.pt", map_location="cpu", weights_only=True)
    assert "discriminator" not in state and state["arch"]["hear"] == TINY_HEAR_CONFIG
    load_state_dict_file(HEARNet(**TINY_HEAR_CONFIG), out / "hear_net.pth")
    with Image.open(out / "samples" / "step_0000003.png") as im:
        assert im.size[1] == 4 * 64  # target | source | AEI swap | refined


@pytest.mark.slow
def test_two_ray_train_workers(face_crops: Path, tmp_path: Path) -> None:
    """workers=2: TorchTrainer with DDP over gloo on CPU; rank 0 writes the files."""
    out = tmp_path / "ray"
    cfg = tiny_cfg("train.steps=2", "train.batch_size=2", "train.workers=2", "train.checkpoint_every=1")
    history = train("aei", face_crops, out, cfg)
    assert [e["step"] for e in history] == [1, 2]
    assert latest_checkpoint(out) == out / "checkpoints" / "step_0000002.pt"
    load_state_dict_file(AEINet(**TINY_AEI_CONFIG), out / "G_unet_2blocks.pth")
    assert [e["step"] for e in read_scalars(out)] == [1, 2]
