"""RSGAN on CPU: a tiny training run (64 px) on crops of the shared photos (both regions' rebuilds, a finite
KL), its face/hair separation measured on those crops, the exported file through the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.weights import load_network
from pipeline.training.loop import train
from tests.training.conftest import tiny_cfg

STEPS = 200
TINY_RSGAN = ["rsgan.layout.size=64", "rsgan.layout.base=16", "rsgan.layout.z_dim=64"]


@pytest.fixture(scope="module")
def rsgan_run(face_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("rsgan")
    cfg = tiny_cfg(
        *TINY_RSGAN, f"train.steps={STEPS}", f"train.checkpoint_every={STEPS}", f"train.sample_every={STEPS}"
    )
    return out, train("rsgan", face_crops, out, cfg)


def _mean(history: list[dict], key: str, part: slice) -> float:
    return float(np.mean([r[key] for r in history[part]]))


@pytest.mark.slow
def test_tiny_rsgan_halves_both_regions_rebuilds_with_a_finite_kl(rsgan_run: tuple[Path, list[dict]]) -> None:
    _, history = rsgan_run
    assert len(history) == STEPS
    first, last = slice(0, 10), slice(-10, None)
    for key in ("rec_face", "rec_hair"):
        assert _mean(history, key, last) <= 0.5 * _mean(history, key, first), key
    assert _mean(history, "rec", last) < _mean(history, "rec", first)
    assert all(np.isfinite(r["kl"]) for r in history)


@pytest.mark.slow
def test_swapped_face_keeps_the_targets_hair_and_the_sources_face(
    rsgan_run: tuple[Path, list[dict]], face_crops: Path
) -> None:
    """On the training crops: the source's face latent with the target's hair latent draws a crop whose
    hair region is nearer the target's than the source's, and whose face region is nearer the source's."""
    from PIL import Image

    from pipeline.config import load_config
    from stages.landmarks import LandmarkStage
    from stages.swap_wsc import crop_regions

    out, _ = rsgan_run
    cfg = load_config(None, TINY_RSGAN)
    net = load_network("rsgan", out, layout=dict(cfg["rsgan"]["layout"]))
    files = sorted(face_crops.glob("*.png"))[:16]
    crops = np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((64, 64), Image.BILINEAR)) for f in files]
    )
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    face = crop_regions(x, "ghost", LandmarkStage(cfg))
    with torch.no_grad():
        mu_f, _, mu_h, _ = net.encode(x, face)
        source = torch.roll(torch.arange(len(x)), 1)  # each crop's source: the crop before it
        y = net.generate(mu_f[source], mu_h)

    def dist(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> float:
        return float(((a - b).abs() * m).sum() / (3 * m.sum()))

    hair = 1.0 - face
    assert dist(y, x, hair) < dist(y, x[source], hair)
    assert dist(y, x[source], face) < dist(y, x, face)


@pytest.mark.slow
def test_rsgan_backend_end_to_end(rsgan_run: tuple[Path, list[dict]], data_dir: Path, tmp_path: Path) -> None:
    """``--config configs/rsgan.yaml`` with the tiny run's weights: every frame and timestamp, the audio
    packets and the synthetic tag kept; the face changed, the background not; the wrong crop refused."""
    from tests.media_checks import check_backend_end_to_end

    out_dir, _ = rsgan_run
    overrides = [f"weights.dir={out_dir}", "executor=local", "align.crop_size=64", *TINY_RSGAN]
    check_backend_end_to_end(data_dir, tmp_path, "rsgan", overrides)


@pytest.mark.slow
def test_sample_command_draws_a_grid_of_random_parts(
    rsgan_run: tuple[Path, list[dict]], data_dir: Path, tmp_path: Path, capsys
) -> None:
    """``sample --backend rsgan``: the photo's crop, then ``count`` random faces (or hairs) on its own hair
    (or face), as a synthetic-tagged PNG grid; the same seed draws the same grid, another a different one."""
    from PIL import Image

    from pipeline.sample import main

    out_dir, _ = rsgan_run
    photo = data_dir / "faces" / "obama_a.jpg"
    common = [
        "--backend",
        "rsgan",
        "--input",
        str(photo),
        f"weights.dir={out_dir}",
        "align.crop_size=64",
        *TINY_RSGAN,
    ]
    grids = {}
    for k, (part, seed) in enumerate((("face", 0), ("face", 0), ("face", 1), ("hair", 0))):
        out = tmp_path / f"{k}.png"
        assert (
            main(
                [
                    *common,
                    "--part",
                    part,
                    "--seed",
                    str(seed),
                    "--count",
                    "7",
                    "--output",
                    str(out),
                    "--overwrite",
                ]
            )
            == 0
        )
        assert f"7 random {part}s" in capsys.readouterr().out
        with Image.open(out) as im:
            assert "synthetic" in im.info["Comment"]
            grids[k] = np.asarray(im.convert("RGB"))
    grid = grids[0]
    assert np.array_equal(grids[1], grid)  # the same seed draws the same grid
    assert grid.shape == (128, 256, 3)  # 8 tiles of 64 px in rows of 4
    tiles = [
        grid[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64].astype(int) for r in range(2) for c in range(4)
    ]
    assert all(np.abs(tiles[k] - tiles[k + 1]).mean() > 1.0 for k in range(1, 7))  # the samples differ
    assert np.array_equal(grids[2][:64, :64], grid[:64, :64])  # the photo's own crop comes first
    assert not np.array_equal(grids[2], grid)
    assert not np.array_equal(grids[3], grid)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main([*common[:4], "--part", "face", f"weights.dir={empty}", "--output", str(tmp_path / "x.png")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rsgan.pth" in err and not (tmp_path / "x.png").exists()


def write_labels(crops: Path, path: Path) -> Path:
    """A ``list_attr_celeba.txt`` labelling every source image of ``crops`` (arbitrary, fixed labels)."""
    import json

    from models.rsgan import CELEBA_ATTRIBUTES

    sources = sorted(
        {
            Path(json.loads(line)["source"]).name
            for line in (crops / "index.jsonl").read_text().splitlines()
            if line.strip()
        }
    )
    rng = np.random.default_rng(0)
    lines = [str(len(sources)), " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{name} " + " ".join(rng.choice(["1", "-1"], size=40)) for name in sources]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def rsgan_attr_run(face_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("rsgan_attr")
    labels = write_labels(face_crops, out / "list_attr_celeba.txt")
    cfg = tiny_cfg(
        *TINY_RSGAN,
        "rsgan.layout.n_attr=40",
        f"train.rsgan_attributes={labels}",
        "train.steps=60",
        "train.checkpoint_every=60",
        "train.sample_every=60",
    )
    return out, train("rsgan", face_crops, out, cfg)


@pytest.mark.slow
def test_attribute_labels_train_the_classifier_head_and_edit_a_photo_and_a_clip(
    rsgan_attr_run: tuple[Path, list[dict]], data_dir: Path, tmp_path: Path, capsys
) -> None:
    """With CelebA-format labels: the attribute terms run, both networks are exported, and ``edit --backend
    rsgan`` changes a photo only around its face and edits a clip keeping frames, times, audio and tag."""
    from PIL import Image

    from pipeline.config import load_config
    from pipeline.edit import edit_config, edit_video, main
    from pipeline.run import load_image
    from stages.attribute_edit import EditRequest
    from stages.detect import DetectStage
    from tests.media_checks import check_learned_swap
    from tests.media_making import stream_copy

    out_dir, history = rsgan_attr_run
    assert all(np.isfinite(r["cls"]) and r["cls"] > 0 for r in history)
    assert (out_dir / "rsgan.pth").is_file() and (out_dir / "rsgan_discriminator.pth").is_file()
    layout = [*TINY_RSGAN, "rsgan.layout.n_attr=40", f"weights.dir={out_dir}"]
    photo = data_dir / "faces" / "obama_a.jpg"
    out = tmp_path / "obama.edited.png"
    args = ["--backend", "rsgan", "--input", str(photo), "--attribute", "smiling=1", "--output", str(out)]
    assert main([*args, *layout]) == 0
    assert "1 of 1 face(s) edited (smiling" in capsys.readouterr().out
    before, after = load_image(photo), np.asarray(Image.open(out).convert("RGB"))
    changed = (before != after).any(axis=2)
    x1, y1, x2, y2 = DetectStage(load_config()).detect_image(before)[0].box
    w, h = x2 - x1, y2 - y1  # the hull (brows lifted, feathered) lies within MTCNN's box grown by a quarter
    inside = np.zeros_like(changed)
    inside[max(int(y1 - h / 4), 0) : int(y2 + h / 4), max(int(x1 - w / 4), 0) : int(x2 + w / 4)] = True
    assert changed.any() and not (changed & ~inside).any()
    clip = stream_copy(data_dir / "videos" / "retalking_face_5.mp4", tmp_path / "clip.mp4", 0.5)
    cfg = edit_config(load_config(None, [*layout, "executor=local"]), "rsgan")
    summary = edit_video(
        clip, tmp_path / "e.mp4", cfg, EditRequest({"black_hair": 1.0}, backend="rsgan"), progress=False
    )
    check_learned_swap(clip, tmp_path / "e.mp4", summary, grow=1.0)  # a hair edit pastes the whole crop


def test_rsgan_edit_and_labels_are_refused_in_one_line_where_they_cannot_work(
    rsgan_run: tuple[Path, list[dict]], data_dir: Path, tmp_path: Path, capsys
) -> None:
    """A model trained without attributes cannot edit; labels that miss a crop's image are named."""
    from models.errors import InputError
    from pipeline.edit import main
    from pipeline.training.recipes.rsgan import crop_labels, read_celeba_attributes

    out_dir, _ = rsgan_run
    args = [
        "--backend",
        "rsgan",
        "--input",
        str(data_dir / "faces" / "obama_a.jpg"),
        "--attribute",
        "smiling=1",
    ]
    assert main([*args, "--output", str(tmp_path / "o.png"), f"weights.dir={out_dir}", *TINY_RSGAN]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "train.rsgan_attributes" in err and not (tmp_path / "o.png").exists()
    )
    bad = tmp_path / "attrs.txt"
    bad.write_text("1\nSmiling\nx.jpg 1\n")
    with pytest.raises(InputError, match="not CelebA's list_attr_celeba.txt format"):
        read_celeba_attributes(bad)
    with pytest.raises(InputError, match="no labels for 1 of 1 crops"):
        crop_labels([tmp_path / "c.png"], {}, "attrs.txt")


@pytest.mark.slow
def test_parsing_regions_are_wired_through_swap_and_training(
    rsgan_run: tuple[Path, list[dict]], data_dir: Path, tmp_path: Path
) -> None:
    """``rsgan.regions=parsing``: the swap takes both regions from the face parser (here a random BiSeNet:
    the wiring, not the quality), and training names the parser's file when it is missing."""
    from models.bisenet import bisenet19
    from models.errors import ModelFileError
    from models.weights import REGISTRY
    from pipeline.config import CONFIG_DIR, load_config
    from pipeline.run import swap_video
    from pipeline.training.recipes.rsgan import RSGANRecipe
    from tests.media_checks import check_learned_swap
    from tests.media_making import stream_copy

    out_dir, _ = rsgan_run
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "rsgan.pth").write_bytes((out_dir / "rsgan.pth").read_bytes())
    torch.manual_seed(0)
    torch.save(bisenet19().state_dict(), weights / REGISTRY["face_parser_bisenet"].filename)
    clip = stream_copy(data_dir / "videos" / "retalking_face_5.mp4", tmp_path / "clip.mp4", 0.5)
    overrides = [
        f"weights.dir={weights}",
        "executor=local",
        "align.crop_size=64",
        "rsgan.regions=parsing",
        *TINY_RSGAN,
    ]
    cfg = load_config(CONFIG_DIR / "rsgan.yaml", overrides)
    summary = swap_video(clip, data_dir / "faces" / "obama_a.jpg", tmp_path / "p.mp4", cfg, progress=False)
    check_learned_swap(clip, tmp_path / "p.mp4", summary)
    empty = load_config(None, [*TINY_RSGAN, "rsgan.regions=parsing", f"weights.dir={tmp_path}"])
    with pytest.raises(ModelFileError, match="rsgan.regions=parsing.*79999_iter.pth"):
        RSGANRecipe.check_files(RSGANRecipe.architecture(empty), empty)
