"""Bad input: one-line error naming the file, exit code 2, nothing written."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipeline.__main__ import main


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["swap", *args, "--quiet", "executor=local"])
    return code, capsys.readouterr().err.strip()


def run_d20(capsys, data_dir, output, *extra: str) -> tuple[int, str]:
    """Swap obama_a.jpg onto liveportrait_d20.mp4 into ``output`` with extra arguments."""
    video, face = data_dir / "videos" / "liveportrait_d20.mp4", data_dir / "faces" / "obama_a.jpg"
    return run(capsys, "--input", str(video), "--source", str(face), "--output", str(output), *extra)


def test_source_without_face(tmp_path, data_dir, capsys):
    from PIL import Image

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    out = tmp_path / "out.mp4"
    code, err = run(
        capsys,
        "--input",
        str(data_dir / "videos" / "liveportrait_d20.mp4"),
        "--source",
        str(blank),
        "--output",
        str(out),
    )
    assert code == 2
    assert "no face found in" in err and "wall.png" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [blank]


def test_input_not_a_video(tmp_path, data_dir, capsys):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    code, err = run(
        capsys,
        "--input",
        str(bogus),
        "--source",
        str(data_dir / "faces" / "obama_a.jpg"),
        "--output",
        str(tmp_path / "out.mp4"),
    )
    assert code == 2 and "clip.mp4" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert bogus.read_bytes() == b"\x00" * 1000


def test_output_equal_to_input_is_refused(tmp_path, data_dir, capsys):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(data_dir / "videos" / "liveportrait_d20.mp4", clip)
    before = clip.read_bytes()
    code, err = run(
        capsys,
        "--input",
        str(clip),
        "--source",
        str(data_dir / "faces" / "obama_a.jpg"),
        "--output",
        str(clip),
    )
    assert code == 2 and "clip.mp4" in err and "input" in err
    assert clip.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize("override", ["swap.nonsense=1", "executor"])
def test_bad_override(override, data_dir, capsys, tmp_path):
    code, err = run_d20(capsys, data_dir, tmp_path / "o.mp4", override)
    assert code == 2 and override.split("=")[0] in err


def test_swap_writes_beside_the_input_by_default(tmp_path, data_dir, capsys):
    """A successful run: default output name, summary line, nothing else left behind."""
    clip = tmp_path / "talk.mp4"
    shutil.copyfile(data_dir / "videos" / "retalking_face_5.mp4", clip)
    code = main(
        [
            "swap",
            "--input",
            str(clip),
            "--source",
            str(data_dir / "faces" / "obama_a.jpg"),
            "--quiet",
            "executor=local",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4", "talk.swapped.mp4"]
    assert out.startswith("swapstream: 122 frames, 122 with a face") and "talk.swapped.mp4" in out


def test_missing_fan_weights_say_where_to_put_them(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, err = run_d20(capsys, data_dir, tmp_path / "o.mp4", "landmarks.model=fan")
    assert code == 2 and len(err.splitlines()) == 1
    assert "2DFAN4-11f355bf06.pth.tar" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert not (tmp_path / "o.mp4").exists()


def test_output_that_is_a_folder_is_refused(tmp_path, data_dir, capsys):
    folder = tmp_path / "out.mp4"
    folder.mkdir()
    code, err = run_d20(capsys, data_dir, folder)
    assert code == 2 and "is a folder" in err
    assert list(folder.iterdir()) == []


def test_default_output_goes_to_current_folder_when_input_folder_is_read_only(tmp_path, monkeypatch):
    """Shared media folders are often read-only (root ignores mode bits, so os.access is what decides)."""
    from pipeline import run as run_module

    media, work = tmp_path / "media", tmp_path / "work"
    media.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    assert run_module.default_output(media / "talk.mp4") == media / "talk.swapped.mp4"
    real_access = run_module.os.access
    monkeypatch.setattr(run_module.os, "access", lambda p, mode: p != media and real_access(p, mode))
    assert run_module.default_output(media / "talk.mp4") == work / "talk.swapped.mp4"


# Every subcommand ends at one edge (pipeline/cli.py): an unexpected error inside is one line and exit 1,
# --debug shows its traceback. (module, function the command calls, its arguments)
EDGE_CASES = [
    (
        "pipeline.evaluation.evaluate",
        "evaluate",
        ["evaluate", "--original", "a.mp4", "--output", "b.mp4", "--source", "c.jpg"],
    ),
    ("pipeline.evaluation.quality", "run_grid", ["quality", "--out", "OUT"]),
    ("pipeline.training.prepare_faces", "prepare_faces", ["prepare-faces", "HERE", "--out", "OUT"]),
    ("pipeline.training.train", "train", ["train", "aei", "--data", "HERE", "--out", "OUT"]),
    ("pipeline.evaluation.ffpp", "run_benchmark", ["ffpp", "--root", "HERE", "--out", "OUT"]),
    ("pipeline.crops", "write_crops", ["crops", "--input", "HERE", "--out", "OUT"]),
    ("models.weights", "download", ["weights", "--dir", "HERE", "--only", "aei_net"]),
]


@pytest.mark.parametrize("module, function, argv", EDGE_CASES, ids=[c[0].split(".")[-1] for c in EDGE_CASES])
def test_every_subcommand_ends_an_unexpected_error_in_one_line(
    module, function, argv, tmp_path, monkeypatch, capsys
):
    import importlib

    def boom(*args, **kwargs):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(importlib.import_module(module), function, boom)
    argv = [a.replace("HERE", str(tmp_path)).replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        err.strip().split(": error:")[0]
        + ": error: RuntimeError: something broke (run with --debug for the details)"
    ]
    with pytest.raises(RuntimeError, match="something broke"):
        main([*argv, "--debug"])


def test_batch_ends_an_unexpected_error_in_one_line(tmp_path, monkeypatch, capsys):
    from pipeline import batch

    def boom(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(batch, "run_jobs", boom)
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"input,source,output\n{tmp_path}/a.mp4,{tmp_path}/b.jpg,{tmp_path}/o.mp4\n")
    assert main(["batch", "--manifest", str(manifest)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["swapstream: error: RuntimeError: something broke (run with --debug for the details)"]


def test_weights_names_an_unknown_model_in_one_line(tmp_path, capsys):
    assert main(["weights", "--dir", str(tmp_path), "--only", "no_such_model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("swapstream: error: unknown model(s) no_such_model; known: ")
    assert not any(tmp_path.iterdir())
