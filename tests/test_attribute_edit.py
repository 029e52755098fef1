"""MaskFaceGAN attribute editing on CPU with tiny random networks (a 32 px StyleGAN2, a small e4e, parser and
classifier): the procedure's pieces, a photo edit through the command line (its loss falls, every pixel
outside the blend mask is the input's), and a video edit of a shared clip under both executors (frames,
timestamps, audio and tag kept, identical frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.weights import REGISTRY, build_network, layout_of
from pipeline.config import load_config
from stages.attribute_edit import (
    EditNetworks,
    EditPlan,
    EditSettings,
    attribute_kl,
    edit_face,
    mapping_mean,
    noise_regularize,
    parse_attributes,
)

TINY = [
    "stylegan2.size=32",
    "stylegan2.style_dim=32",
    "stylegan2.n_mlp=2",
    "stylegan2.max_channels=32",
    "edit.e4e.stages=[[16,1],[16,1],[32,1],[32,1]]",
    "edit.e4e.n_styles=8",
    "edit.e4e.input_size=64",
    "edit.parser.width=8",
    "edit.parser.aspp_width=16",
    "edit.parser.input_size=64",
    "edit.classifier.width=8",
    "edit.steps_latent=40",  # 40 steps instead of 1000, so a 10x learning rate
    "edit.lr_latent=0.01",
    "edit.steps_noise=10",
    "edit.classifier_from=20",
    "edit.dynamic_steps=8",
    "edit.e4e_start=12",
    "edit.mean_samples=2000",
]
EDIT_FILES = ("stylegan2_ffhq", "e4e_encoder", "maskfacegan_parser", "maskfacegan_classifier")


def tiny_cfg(*more: str) -> dict:
    return load_config(None, [*TINY, *more])


def tiny_network(name: str, cfg: dict) -> torch.nn.Module:
    """Registry network ``name`` in its tiny layout, made responsive: BatchNorm statistics measured on
    random images (a default-initialised classifier's logits barely move with its input otherwise), the
    generator's noise strengths 0.1 (they start at zero, so the noise stage would have nothing to fit)."""
    net = build_network(REGISTRY[name].network, layout_of(name, cfg))
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    if norms:
        for m in norms:
            m.momentum = None  # a cumulative average
        net.train()
        with torch.no_grad():
            net(torch.rand(16, 3, 64, 64) * 2 - 1)
    for key, value in net.state_dict().items():
        if key.endswith("noise.weight"):
            value.fill_(0.1)
    return net.eval().requires_grad_(False)


def write_tiny_weights(folder: Path, cfg: dict, seed: int = 0) -> None:
    """Random tiny networks in the registry's files and packing (the e4e file with its ``latent_avg``). The
    parser's last layer is zeroed so that it calls every pixel background, mouth or skin alike (a blend
    weight of 2/3 over the whole crop, none outside it)."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in EDIT_FILES:
        entry = REGISTRY[name]
        state = tiny_network(name, cfg).state_dict()
        if name == "maskfacegan_parser":
            state["model.classifier.4.weight"].zero_()
            state["model.classifier.4.bias"].copy_(
                torch.tensor([0.0, 0.0, -20, -20, -20, -20, 0.0, -20, -20])
            )
            state["loss.weight"] = torch.ones(9)
        if name == "e4e_encoder":
            obj = {"encoder_state_dict": state, "latent_avg": 0.1 * torch.randn(8, 32)}
        else:
            obj = {entry.state_key: state} if entry.state_key else state
        torch.save(obj, folder / entry.filename)


class DiscParser(torch.nn.Module):
    """A parser stand-in with a known answer: skin in a centred disc of radius 0.3 (of the side), mouth
    in a small disc below the centre, background elsewhere (probabilities 0.9992 / 0.0001 each)."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        r = ((x - 0.5) ** 2 + (y - 0.5) ** 2).sqrt()
        mouth = ((x - 0.5) ** 2 + (y - 0.7) ** 2).sqrt() < 0.1
        labels = torch.where(mouth, 1, torch.where(r < 0.3, 6, 0))
        probs = torch.full((9, size, size), 0.0001)
        probs.scatter_(0, labels[None], 0.9992)
        self.register_buffer("probs", probs[None])

    def probabilities(self, image01: torch.Tensor) -> torch.Tensor:
        return self.probs.expand(image01.shape[0], -1, -1, -1) + 0 * image01.mean()


def tiny_networks(cfg: dict, parser: torch.nn.Module | None = None) -> EditNetworks:
    torch.manual_seed(1)
    nets = {n: tiny_network(n, cfg) for n in EDIT_FILES}
    generator = nets["stylegan2_ffhq"]
    return EditNetworks(
        generator=generator,
        classifier=nets["maskfacegan_classifier"],
        parser=parser if parser is not None else nets["maskfacegan_parser"],
        encoder=nets["e4e_encoder"],
        latent_avg=torch.zeros(8, 32),
        mean_samples=2000,
    )


def face_image(seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3, 32, 32), generator=gen)


def test_attribute_requests_parse_and_plan_masks_as_maskfacegan() -> None:
    assert parse_attributes(["Smiling=1", "male=0"]) == {"smiling": 1.0, "male": 0.0}
    for bad in (["smile=1"], ["smiling"], ["smiling=2"], ["smiling=yes"], []):
        with pytest.raises(ValueError):
            parse_attributes(bad)
    smile = EditPlan.of({"smiling": 1.0}, 0.05)
    assert smile.local and smile.targets == (0.95,) and smile.blend == ("skin", "mouth")
    assert smile.recon == ("skin",) and smile.dynamic == ("mouth",) and not smile.hair
    wavy = EditPlan.of({"wavy_hair": 1.0}, 0.05)
    assert wavy.hair_shape and wavy.recon == ("skin", "ears") and wavy.shape == ("hair", "ears")
    male = EditPlan.of({"male": 0.0}, 0.05)
    assert (
        not male.local and male.targets == (0.05,) and len(male.blend) == 8 and "background" not in male.blend
    )
    both = EditPlan.of({"smiling": 1.0, "black_hair": 1.0}, 0.05)
    assert both.local and both.hair and both.blend == ("skin", "mouth", "hair")
    assert not EditPlan.of({"smiling": 1.0, "young": 1.0}, 0.05).local
    assert not EditPlan.of({"smiling": 1.0}, 0.05, force_global=True).local


def test_kl_and_noise_regulariser_match_their_definitions() -> None:
    p, t = torch.tensor([[0.2, 0.9]]), torch.tensor([[0.95, 0.05]])
    expected = np.mean(
        [
            0.95 * np.log(0.95 / 0.2) + 0.05 * np.log(0.05 / 0.8),
            0.05 * np.log(0.05 / 0.9) + 0.95 * np.log(0.95 / 0.1),
        ]
    )
    assert attribute_kl(p, t).item() == pytest.approx(expected, rel=1e-5)
    assert attribute_kl(t, t).item() == pytest.approx(0.0, abs=1e-7)
    flat = [torch.ones(1, 1, 16, 16)]  # fully correlated: 2 per octave, 16 and 8
    assert noise_regularize(flat).item() == pytest.approx(4.0)
    white = [torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))]
    assert noise_regularize(white).item() < 0.01
    generator = tiny_network("stylegan2_ffhq", tiny_cfg())
    mean = mapping_mean(generator, 2000)
    assert torch.equal(mean, mapping_mean(generator, 2000))  # seeded: the same start every run
    fresh = generator.mapping(torch.randn(2000, 32, generator=torch.Generator().manual_seed(9))).mean(0)
    assert (mean - fresh).abs().max() < 0.1 * fresh.abs().max()


def test_local_edit_lowers_its_loss_and_leaves_pixels_outside_the_blend_mask_exact() -> None:
    cfg = tiny_cfg()
    nets = tiny_networks(cfg, DiscParser())
    settings = EditSettings.of(cfg["edit"])
    image = face_image()
    plan = EditPlan.of({"smiling": 1.0}, 0.05)
    result = edit_face(image, plan, nets, settings)
    rows = result.losses
    latent = [r for r in rows if r["stage"] == "latent"]
    noise = [r for r in rows if r["stage"] == "noise"]
    assert len(latent) == 40 and len(noise) == 11
    # reconstruction before the classifier starts, then the classifier term after it
    assert latent[19]["recon"] < 0.5 * latent[0]["recon"]
    classf = [r["classifier"] for r in latent if "classifier" in r]
    assert len(classf) == 20 and classf[-1] < classf[0]
    assert latent[-1]["total"] < 0.5 * latent[0]["total"]
    assert noise[-1]["recon"] < noise[0]["recon"] and noise[-1]["noise"] < noise[0]["noise"]
    assert result.after["smiling"] > result.before["smiling"]  # toward the target 0.95
    # outside the blend mask (skin + mouth disc) every value is the input's, inside the face is drawn
    outside = (result.blend == 0).expand_as(image)
    assert outside.float().mean() > 0.5
    assert torch.equal(result.composite[outside], image[outside])
    assert (result.composite - image)[~outside].abs().mean() > 0.01


def test_global_edit_starts_from_e4e_and_uses_masked_lpips() -> None:
    from models.lpips import LPIPS

    cfg = tiny_cfg()
    nets = tiny_networks(cfg, DiscParser())
    torch.manual_seed(2)
    nets.lpips = LPIPS().eval().requires_grad_(False)
    image = face_image(4)
    plan = EditPlan.of({"male": 0.0}, 0.05)
    result = edit_face(image, plan, nets, EditSettings.of(cfg["edit"]))
    latent = [r for r in result.losses if r["stage"] == "latent"]
    assert latent[0]["step"] == 12  # an e4e start skips MaskFaceGAN's first 300 (here 12) steps
    assert "classifier" in latent[0]  # a global edit's classifier term runs from the start
    assert torch.allclose(result.start, nets.invert(image))
    assert latent[-1]["total"] < latent[0]["total"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("edit_weights")
    write_tiny_weights(folder, tiny_cfg())
    return folder


def _crop_footprint(photo: Path, tmp: Path, weights: Path) -> np.ndarray:
    """``(H, W) bool``: the frame pixels the face's 32 px FFHQ crop covers (from ``pipeline crops``)."""
    import cv2

    from pipeline.crops import main as crops_main
    from pipeline.run import load_image

    out = tmp / "crops"
    assert (
        crops_main(["--input", str(photo), "--out", str(out), "align.template=ffhq", "align.crop_size=32"])
        == 0
    )
    rows = [json.loads(line) for line in (out / "crops.jsonl").read_text().splitlines()]
    h, w = load_image(photo).shape[:2]
    covered = np.zeros((h, w), np.uint8)
    for row in rows:
        m_inv = cv2.invertAffineTransform(np.array(row["affine"], np.float64))
        corners = np.array([[-1, -1], [33, -1], [33, 33], [-1, 33]], np.float64)
        pts = corners @ m_inv[:, :2].T + m_inv[:, 2]
        cv2.fillConvexPoly(covered, np.round(pts).astype(np.int32), 1)
    return covered.astype(bool)


def test_photo_edit_command_writes_a_png_changed_only_inside_the_face_crop(
    data_dir: Path, tiny_weights: Path, tmp_path: Path, capsys
) -> None:
    from PIL import Image

    from pipeline.edit import main
    from pipeline.run import load_image

    photo = data_dir / "faces" / "obama_a.jpg"
    out = tmp_path / "obama.edited.png"
    args = [
        "--input",
        str(photo),
        "--attribute",
        "smiling=1",
        "--output",
        str(out),
        f"weights.dir={tiny_weights}",
        *TINY,
    ]
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "1 of 1 face(s) edited (smiling" in line and str(out) in line
    before, after = load_image(photo), np.asarray(Image.open(out).convert("RGB"))
    assert after.shape == before.shape
    changed = (before != after).any(axis=2)
    inside = _crop_footprint(photo, tmp_path, tiny_weights)
    assert changed.any() and not (changed & ~inside).any()  # outside the crop: bit-identical
    assert changed[inside].mean() > 0.5
    with Image.open(out) as im:
        assert "synthetic" in im.info.get("Comment", "")
    # an existing output is refused without --overwrite; a JPEG output is refused (lossy)
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args[:5], str(tmp_path / "x.jpg"), *args[6:]]) == 2
    assert "PNG" in capsys.readouterr().err and not (tmp_path / "x.jpg").exists()


def test_edit_names_a_missing_network_file_in_one_line(data_dir: Path, tmp_path: Path, capsys) -> None:
    from pipeline.edit import main

    empty = tmp_path / "weights"
    empty.mkdir()
    out = tmp_path / "o.png"
    code = main(
        [
            "--input",
            str(data_dir / "faces" / "obama_a.jpg"),
            "--attribute",
            "smiling=1",
            "--output",
            str(out),
            f"weights.dir={empty}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "stylegan2-ffhq-config-f.pt" in err and str(empty) in err
    assert not out.exists()
    assert main(["--input", str(data_dir / "faces" / "obama_a.jpg"), "--attribute", "smile=1"]) == 2
    assert "unknown attribute 'smile'" in capsys.readouterr().err


@pytest.mark.slow
def test_video_edit_keeps_frames_times_audio_and_tag_and_ray_matches_local(
    data_dir: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    from pipeline.edit import edit_config, edit_video
    from stages.attribute_edit import EditRequest
    from tests.media_checks import check_learned_swap
    from tests.media_making import stream_copy

    clip = stream_copy(data_dir / "videos" / "retalking_face_5.mp4", tmp_path / "clip.mp4", 0.5)
    request = EditRequest({"smiling": 1.0})
    runs = {}
    for executor in ("local", "ray"):
        cfg = edit_config(tiny_cfg(f"weights.dir={tiny_weights}", f"executor={executor}"))
        out = tmp_path / f"{executor}.mp4"
        runs[executor] = edit_video(clip, out, cfg, request, progress=False, digest=True)
        check_learned_swap(clip, out, runs[executor], grow=1.0)
    assert runs["local"].frames_digest == runs["ray"].frames_digest
