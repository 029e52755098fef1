"""The faceshifter backend end to end with randomly initialised full-size networks.

Random weights do not look like anyone; what is checked is the plumbing: frames, timestamps, audio,
the synthetic tag and the untouched background, plus the errors for missing weight files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.__main__ import main
from pipeline.config import CONFIG_DIR, load_config
from pipeline.run import swap_video
from tests.media_checks import check_learned_swap
from tests.media_making import stream_copy


def write_random_weights(folder: Path, hear: bool = True) -> None:
    """Files named as the registry expects, holding randomly initialised full-size networks."""
    from models.aei_net import AEINet
    from models.arcface import iresnet100
    from models.hear_net import HEARNet

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(iresnet100().state_dict(), folder / "backbone.pth")
    torch.save(AEINet().state_dict(), folder / "G_unet_2blocks.pth")
    if hear:
        torch.save(HEARNet().state_dict(), folder / "hear_net.pth")


@pytest.mark.slow
def test_faceshifter_backend_end_to_end(data_dir, tmp_path):
    weights = tmp_path / "weights"
    write_random_weights(weights)
    clip = stream_copy(data_dir / "videos" / "retalking_face_5.mp4", tmp_path / "clip.mp4", 0.5)
    out = tmp_path / "out.mp4"
    cfg = load_config(CONFIG_DIR / "faceshifter.yaml", [f"weights.dir={weights}", "executor=local"])
    summary = swap_video(clip, data_dir / "faces" / "obama_a.jpg", out, cfg, progress=False)
    check_learned_swap(clip, out, summary)


def test_missing_generator_weights_are_a_clear_error(data_dir, tmp_path, capsys):
    empty = tmp_path / "weights"
    empty.mkdir()
    out = tmp_path / "o.mp4"
    code = main(
        [
            "swap",
            "--input",
            str(data_dir / "videos" / "liveportrait_d20.mp4"),
            "--source",
            str(data_dir / "faces" / "obama_a.jpg"),
            "--output",
            str(out),
            "--config",
            str(CONFIG_DIR / "faceshifter.yaml"),
            f"weights.dir={empty}",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "G_unet_2blocks.pth" in err and str(empty) in err and "make weights" in err
    assert not out.exists()


def test_faceshifter_needs_its_alignment(data_dir, tmp_path, capsys):
    weights = tmp_path / "w"
    weights.mkdir()
    for name in ("backbone.pth", "G_unet_2blocks.pth"):
        (weights / name).write_bytes(b"")
    from models.errors import ConfigError
    from stages.swap_faceshifter import FaceShifterSwapStage

    cfg = load_config(None, ["swap.backend=faceshifter", f"weights.dir={weights}"])
    with pytest.raises(ConfigError, match="align.template=ghost"):
        FaceShifterSwapStage(cfg, torch.zeros(512).numpy())
