"""FaceShifter training: the paper's losses on constructed tensors, pair sampling, the crop dataset, and tiny
AEI-Net / HEAR-Net runs on crops of the shared photos (checkpoints, exports, logs, resume, Ray Train)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.aei_net import TINY_AEI_CONFIG, AEINet
from models.checkpoints import load_state_dict_file
from models.discriminator import d_hinge_loss, g_hinge_loss
from models.errors import ConfigError, InputError, ModelFileError
from models.hear_net import TINY_HEAR_CONFIG, HEARNet
from models.losses import (
    AEILossWeights,
    aei_generator_loss,
    attribute_loss,
    change_loss,
    discriminator_loss,
    hear_loss,
    identity_loss,
    reconstruction_loss,
)
from pipeline.config import CONFIG_DIR, load_config
from pipeline.train import FaceCrops, PairSampler, latest_checkpoint, main, read_scalars, train

TINY_CONFIG = CONFIG_DIR / "train_tiny.yaml"
AEI_STEPS = 30


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    """train() sets torch's thread count from the config: restore it for the other tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def tiny_cfg(*overrides: str) -> dict:
    return load_config(TINY_CONFIG, ["runtime.torch_threads=2", *overrides])


def write_crops(folder: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` random ``side``² RGB PNG crops in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"c{i:02d}.png")
    return folder


# --------------------------------------------------------------------------------------------- losses


def test_identity_loss_is_zero_for_the_same_direction_and_two_for_opposite() -> None:
    z = rand(4, 512)
    assert identity_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_loss(3.0 * z, z).item() == pytest.approx(0.0, abs=1e-6)  # raw embeddings: scale-free
    assert identity_loss(-z, z).item() == pytest.approx(2.0, abs=1e-6)
    ortho = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert identity_loss(ortho, ortho.flip(0)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="identity_loss"):
        identity_loss(z, z[:, :10])


def test_attribute_loss_is_half_the_summed_per_level_mse() -> None:
    a = [rand(2, 4, 2, 2, seed=1), rand(2, 8, 4, 4, seed=2)]
    assert attribute_loss(a, a).item() == 0.0
    b = [a[0] + 1.0, a[1] + 2.0]  # per-level mean squared differences 1 and 4
    assert attribute_loss(b, a).item() == pytest.approx(0.5 * (1.0 + 4.0))
    with pytest.raises(ValueError, match="level 1"):
        attribute_loss(a, [a[0], a[1][:, :2]])


def test_reconstruction_loss_only_counts_same_identity_samples() -> None:
    target = rand(4, 3, 8, 8, seed=3)
    output = target.clone()
    output[1] += 0.5  # a same-identity sample off by 0.5 everywhere: ½ · 0.25
    output[2] += 1.0  # a swap sample: must not count, whatever its error
    same = torch.tensor([True, True, False, False])
    assert reconstruction_loss(output, target, same).item() == pytest.approx(0.5 * 0.25 / 2)
    output[2] -= 5.0
    assert reconstruction_loss(output, target, same).item() == pytest.approx(0.5 * 0.25 / 2)
    assert reconstruction_loss(output, target, same.float()).item() == pytest.approx(0.5 * 0.25 / 2)
    # No same-identity sample: exactly 0, and no gradient reaches the output.
    out = output.clone().requires_grad_(True)
    loss = reconstruction_loss(out, target, torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and out.grad is not None and not out.grad.any()


def test_change_loss_is_l1() -> None:
    x = rand(2, 3, 8, 8, seed=4)
    assert change_loss(x, x).item() == 0.0
    assert change_loss(x - 0.25, x).item() == pytest.approx(0.25)


def test_hinge_signs() -> None:
    real_good, fake_good = [torch.full((2, 1, 3, 3), 1.5)], [torch.full((2, 1, 3, 3), -1.5)]
    assert d_hinge_loss(real_good, fake_good).item() == 0.0
    # Fakes scored as real cost the discriminator, and fakes scored higher cost the generator less.
    assert d_hinge_loss(real_good, [torch.full((2, 1, 3, 3), 1.0)]).item() == pytest.approx(2.0)
    assert (
        g_hinge_loss([torch.full((1, 1, 2, 2), 2.0)]).item() < g_hinge_loss([torch.zeros(1, 1, 2, 2)]).item()
    )
    loss, terms = discriminator_loss(real_good, fake_good)
    assert (
        loss.item() == 0.0
        and terms["d_real"] == pytest.approx(1.5)
        and terms["d_fake"] == pytest.approx(-1.5)
    )


def test_aei_generator_loss_uses_the_paper_weights() -> None:
    assert AEILossWeights() == AEILossWeights(adv=1.0, att=10.0, id=5.0, rec=10.0)
    target = rand(2, 3, 8, 8, seed=5)
    output = target + 0.1
    attrs_t = [rand(2, 4, 4, 4, seed=6)]
    attrs_y = [attrs_t[0] + 0.2]
    z_s = rand(2, 16, seed=7)
    z_y = rand(2, 16, seed=8)
    logits = [rand(2, 1, 3, 3, seed=9), rand(2, 1, 2, 2, seed=10)]
    same = torch.tensor([True, False])
    total, terms = aei_generator_loss(logits, z_y, z_s, attrs_y, attrs_t, output, target, same)
    assert set(terms) == {"g", "adv", "att", "id", "rec"}
    expected = (
        g_hinge_loss(logits)
        + 10 * attribute_loss(attrs_y, attrs_t)
        + 5 * identity_loss(z_y, z_s)
        + 10 * reconstruction_loss(output, target, same)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["g"] == pytest.approx(total.item()) and terms["rec"] == pytest.approx(0.5 * 0.01, rel=1e-4)
    # Identical output, attributes and identity: only the adversarial term is left.
    _, zero = aei_generator_loss(logits, z_s, z_s, attrs_t, attrs_t, target, target, same)
    assert zero["att"] == 0.0 and zero["rec"] == 0.0 and zero["id"] == pytest.approx(0.0, abs=1e-6)


def test_hear_loss_terms() -> None:
    target = rand(2, 3, 8, 8, seed=11)
    swapped = rand(2, 3, 8, 8, seed=12)
    z = rand(2, 16, seed=13)
    total, terms = hear_loss(z, z, swapped, swapped, target, torch.tensor([False, False]))
    assert terms["chg"] == 0.0 and terms["rec"] == 0.0 and total.item() == pytest.approx(0.0, abs=1e-6)
    _, terms = hear_loss(z, z, target, swapped, target, torch.tensor([True, True]))
    assert terms["rec"] == 0.0 and terms["chg"] == pytest.approx(change_loss(target, swapped).item())


# --------------------------------------------------------------------------------------------- data


def test_pair_sampler_is_seeded_split_and_marks_reconstruction_pairs() -> None:
    sampler = PairSampler(n=10, batch_size=4, seed=3, same_share=0.3)
    t, s, same = sampler(7)
    t2, s2, same2 = PairSampler(n=10, batch_size=4, seed=3, same_share=0.3)(7)
    assert torch.equal(t, t2) and torch.equal(s, s2) and torch.equal(same, same2)
    assert torch.equal(same, s == t)
    draws = [sampler(step) for step in range(1, 501)]
    share = torch.cat([d[2] for d in draws]).float().mean().item()
    assert 0.25 < share < 0.35
    # Targets walk through permutations: the first 10 positions (steps 1-2, then part of 3) cover all crops.
    stream = torch.cat([d[0] for d in draws[:5]])
    assert sorted(stream[:10].tolist()) == list(range(10))
    # Two ranks of the same step take disjoint positions of the same stream.
    r0 = PairSampler(10, 2, 3, 0.3, rank=0, world=2)(1)[0]
    r1 = PairSampler(10, 2, 3, 0.3, rank=1, world=2)(1)[0]
    assert sorted([*r0.tolist(), *r1.tolist()]) == sorted(stream[:4].tolist())
    assert torch.equal(PairSampler(10, 4, 3, 1.0)(1)[2], torch.ones(4, dtype=torch.bool))
    with pytest.raises(InputError, match="at least 2"):
        PairSampler(1, 4, 0, 0.2)


def test_face_crops_reads_resizes_and_refuses_empty_folders(tmp_path: Path) -> None:
    folder = write_crops(tmp_path / "crops", 3, 32)
    (folder / "index.jsonl").write_text("{}\n")
    data = FaceCrops(folder, 16)
    assert len(data) == 3
    x = data[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0
    same = FaceCrops(folder, 32)[1]
    raw = torch.from_numpy(np.array(Image.open(folder / "c01.png"))).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(same, raw)
    assert data.batch(torch.tensor([2, 0])).shape == (2, 3, 16, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PNG/JPG"):
        FaceCrops(tmp_path / "empty", 16)
    with pytest.raises(InputError, match="no such folder"):
        FaceCrops(tmp_path / "missing", 16)


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
def face_crops(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256² aligned crops of the shared photos (15 photos, 9 people), made by prepare-faces (MTCNN + the
    ArcFace template spanning the crop)."""
    from pipeline.prepare_faces import prepare_faces

    out = tmp_path_factory.mktemp("crops")
    summary = prepare_faces([data_dir / "faces"], out, load_config(), size=256, progress=False)
    assert summary["crops_written"] >= 10, summary
    return out


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
