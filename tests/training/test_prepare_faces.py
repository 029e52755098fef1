"""prepare-faces: aligned FaceShifter crops from photos and a video clip, index, reruns, bad inputs, CLI."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from pipeline.training.extract import INDEX_NAME
from pipeline.training.prepare_faces import main, prepare_faces
from stages.geometry import crop_template
from tests.conftest import DATA
from tests.media_making import stream_copy

PHOTOS = ("obama_a.jpg", "biden_b.jpg", "emma_watson_multi_pose.jpg")
NAME = re.compile(r"^(?P<stem>.+)_(?P<hash>[0-9a-f]{8})_f(?P<frame>\d{6})_(?P<k>\d+)\.png$")


def media(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.fail(f"test media not found: {path} (the shared data folder sits next to the repository)")
    return path


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (to prove inputs are never modified)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / INDEX_NAME).read_text().splitlines()]


def pngs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.png"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """tmp/in: photos/ (3 photos) and clip.mp4 (the first second of a talking-head video, stream copy)."""
    root = tmp_path_factory.mktemp("in")
    (root / "photos").mkdir()
    for name in PHOTOS:
        shutil.copyfile(media(f"faces/{name}"), root / "photos" / name)
    stream_copy(media("videos/retalking_face_5.mp4"), root / "clip.mp4", 1)
    return root


@pytest.fixture(scope="module")
def first_run(inputs: Path, base_cfg: dict, tmp_path_factory) -> tuple[Path, dict, dict[str, str]]:
    """One run over the photo folder and the clip (every=5); returns (out dir, summary, input digests)."""
    before = digests(inputs)
    out = tmp_path_factory.mktemp("crops")
    summary = prepare_faces([inputs / "photos", inputs / "clip.mp4"], out, base_cfg, every=5, progress=False)
    return out, summary, before


def test_crops_names_and_index(first_run, inputs: Path):
    out, summary, before = first_run
    names = pngs(out)
    photo_crops = [n for n in names if not n.startswith("clip_")]
    clip_crops = [n for n in names if n.startswith("clip_")]
    assert len(photo_crops) >= 4  # emma_watson_multi_pose holds several faces
    assert {NAME.match(n)["stem"] for n in photo_crops} == {Path(p).stem for p in PHOTOS}
    assert all(NAME.match(n)["frame"] == "000000" for n in photo_crops)
    # 1 s at 25 fps, every 5th frame: frames 0, 5, ..., one face each.
    assert sorted(int(NAME.match(n)["frame"]) for n in clip_crops) == [0, 5, 10, 15, 20, 25]
    for name in names:
        crop = np.asarray(Image.open(out / name))
        assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    entries = read_index(out)
    assert sorted(e["file"] for e in entries) == names  # one line per crop, no strays, no repeats
    for e in entries:
        m = NAME.match(e["file"])
        assert int(m["frame"]) == e["frame"]
        assert Path(e["source"]).is_file() and Path(e["source"]).stem == m["stem"]
        assert len(e["box"]) == 4 and np.asarray(e["points5"]).shape == (5, 2) and 0.9 <= e["score"] <= 1
        x1, y1, x2, y2 = e["box"]
        assert min(x2 - x1, y2 - y1) >= 64
    assert {e["source"] for e in entries} == {str((inputs / "photos" / p).resolve()) for p in PHOTOS} | {
        str((inputs / "clip.mp4").resolve())
    }
    assert summary["inputs"] == summary["inputs_used"] == 4 and summary["skipped"] == []
    assert summary["frames_read"] == 3 + 6 and summary["frames_decoded"] == 3 + 27
    assert summary["faces_kept"] == summary["crops_written"] == len(names)
    assert digests(inputs) == before


def test_eyes_land_on_the_template(first_run, base_cfg: dict):
    """MTCNN run again on the crops finds the eyes at the template's eye points (frontal faces)."""
    from stages.detect import DetectStage

    out, _, _ = first_run
    detector = DetectStage(base_cfg)
    template = crop_template(256, 1.0, 0.5)
    frontal = [n for n in pngs(out) if n.startswith(("clip_", "obama_a_", "biden_b_"))]
    assert len(frontal) == 8
    for name in frontal:
        faces = detector.detect_image(np.asarray(Image.open(out / name)))
        assert faces, name
        eyes_error = np.linalg.norm(faces[0].points5[:2] - template[:2], axis=1)
        assert eyes_error.max() < 8.0, (name, eyes_error)


def test_second_run_adds_nothing(first_run, inputs: Path, base_cfg: dict):
    out, summary, before = first_run
    index_before = (out / INDEX_NAME).read_bytes()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again = prepare_faces([inputs / "photos", inputs / "clip.mp4"], out, base_cfg, every=5, progress=False)
    assert again["crops_written"] == 0
    assert again["crops_existing"] == again["faces_kept"] == summary["faces_kept"]
    assert (out / INDEX_NAME).read_bytes() == index_before
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    assert digests(inputs) == before
    # Crops of another size would mix into the folder: refused before any work.
    with pytest.raises(InputError, match="another size"):
        prepare_faces([inputs / "photos"], out, base_cfg, size=128, progress=False)
    assert (out / INDEX_NAME).read_bytes() == index_before
    with pytest.raises(InputError, match="another template.*--template ghost"):  # nor FFHQ crops
        prepare_faces([inputs / "photos"], out, base_cfg, progress=False, template="ffhq")
    assert (out / INDEX_NAME).read_bytes() == index_before


def test_ffhq_template_puts_a_frontal_face_where_frontal_points_says(inputs: Path, tmp_path: Path, base_cfg):
    """``template="ffhq"``: FFHQ crops, recorded in the index; MTCNN on a frontal crop finds the eyes where
    :func:`stages.geometry.frontal_points` puts them (the latent swap's training seeds dlib there)."""
    import json

    from stages.detect import DetectStage
    from stages.geometry import frontal_points

    out = tmp_path / "ffhq"
    summary = prepare_faces([inputs / "photos"], out, base_cfg, progress=False, template="ffhq")
    assert summary["crops_written"] > 0
    rows = [json.loads(line) for line in (out / INDEX_NAME).read_text().splitlines()]
    assert {r["template"] for r in rows} == {"ffhq"}
    name = next(n for n in pngs(out) if n.startswith("obama_a_"))
    faces = DetectStage(base_cfg).detect_image(np.asarray(Image.open(out / name)))
    eyes_error = np.linalg.norm(faces[0].points5[:2] - frontal_points("ffhq", 256)[:2], axis=1)
    assert eyes_error.max() < 10.0, eyes_error


def test_bad_inputs_are_skipped_and_reported(tmp_path: Path, base_cfg: dict, capsys):
    """A missing path and a text file named .mp4 are reported and skipped; the photo beside them is used.

    The output folder sits inside the input folder: its crops are never read back as inputs, and a crop
    deleted by hand comes back on the next run without a second index line.
    """
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copyfile(media("faces/obama_a.jpg"), folder / "obama_a.jpg")
    (folder / "notes.txt").write_text("not media, ignored")
    fake = folder / "fake.mp4"
    fake.write_text("this is not a video\n")
    missing = tmp_path / "missing.mp4"
    out = folder / "crops"
    before = digests(folder)

    summary = prepare_faces([folder, missing], out, base_cfg, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"missing.mp4", "fake.mp4"}
    assert "no such file" in reasons["missing.mp4"] and "not a readable video" in reasons["fake.mp4"]
    assert (
        len(err) == 2
        and any("missing.mp4" in line for line in err)
        and any("fake.mp4" in line for line in err)
    )
    assert fake.read_text() == "this is not a video\n"
    assert summary["inputs"] == 2 and summary["inputs_used"] == 1 and summary["faces_kept"] == 1
    (crop,) = pngs(out)
    assert crop.startswith("obama_a_")
    assert {k: v for k, v in digests(folder).items() if not k.startswith("crops/")} == before

    (out / crop).unlink()
    again = prepare_faces([folder], out, base_cfg, progress=False)
    assert again["inputs"] == 2 and again["crops_written"] == 1  # crops/ is not an input
    assert pngs(out) == [crop] and [e["file"] for e in read_index(out)] == [crop]


def test_main(tmp_path: Path, inputs: Path, capsys):
    assert main([str(tmp_path / "nope.jpg"), str(tmp_path / "gone"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.jpg" in err
    assert not (tmp_path / "o").exists()

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main([str(inputs / "clip.mp4"), "--out", str(a_file), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "taken" in err and a_file.read_text() == "x"

    out = tmp_path / "o"
    clip = str(inputs / "clip.mp4")
    # an override between the input and the options
    argv = [clip, "detect.min_score=0.95", "--out", str(out), "--every", "10", "--max-per-input", "2", "-q"]
    code = main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 1 and "2 faces kept" in lines[0]
    assert [int(NAME.match(n)["frame"]) for n in pngs(out)] == [0, 10]


def test_crop_maker_runs_the_detector_on_every_frame_it_reads(tmp_path, base_cfg):
    """Its frames are every n-th frame of a video or separate photos: nothing to carry faces across, and
    a carried face would keep a stage state (a frame) per photo."""
    from pipeline.training.extract import CropMaker

    maker = CropMaker(base_cfg, tmp_path, 256, 40, warn=lambda message: None)
    assert base_cfg["detect"]["every"] > 1 and maker.detector.every == 1
