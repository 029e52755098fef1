"""The bad-input corpus: every case a new user or a hostile input brings, run through the command line.

Each case is built at test time from small cuts of ``../shared/data`` (never stored here) and run as
``python -m pipeline swap`` in a subprocess, so C libraries' own prints count too. For every case: the exit
code, no "Traceback" on stderr, at most one stderr line (the error, or one note on success), nothing
partial left in the output folder, an output only when the run succeeded, and every input byte-identical
afterwards. The fuzz test at the end feeds damaged copies of a real clip and photo to the decoder and
the photo loader directly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import CONFIG_DIR
from tests.conftest import swap_command
from tests.media_checks import load_photo
from tests.media_making import X264_FAST, run_ffmpeg

REPO = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    return (
        hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir" if path.is_dir() else "-"
    )


@pytest.fixture(scope="module")
def media(data_dir, tmp_path_factory) -> dict[str, Path]:
    """Small inputs, made once: cuts of a talking head (0.6 s, 240 px) in many forms, and photos."""
    d = tmp_path_factory.mktemp("bad_inputs")
    src = data_dir / "videos" / "liveportrait_d20.mp4"
    m: dict[str, Path] = {}

    def cut(name: str, seconds: float = 0.6, start: float = 1.0, **options) -> Path:
        out = d / name
        run_ffmpeg(ffmpeg.input(str(src), ss=f"{start:g}").output(str(out), t=f"{seconds:g}", **options))
        return out

    scale = {"vf": "scale=-2:240"}
    m["clip"] = cut("clip.mp4", **scale, **X264_FAST, acodec="aac")
    m["no_audio"] = cut("no_audio.mp4", **scale, **X264_FAST, an=None)
    m["mov"] = cut("clip.mov", **scale, **X264_FAST, acodec="aac")
    m["webm"] = cut("clip.webm", **scale, vcodec="libvpx-vp9", deadline="realtime", acodec="libopus")
    m["odd"] = cut("odd.mp4", vf="scale=241:239", **X264_FAST, pix_fmt="yuv444p")
    m["ten_bit"] = cut("ten_bit.mp4", **scale, **X264_FAST, pix_fmt="yuv420p10le")
    x265 = {"vcodec": "libx265", "preset": "ultrafast", "x265-params": "log-level=none"}
    m["hevc"] = cut("hevc.mp4", **scale, **x265)
    clip = ffmpeg.input(str(m["clip"]))
    m["rotated"] = d / "rotated.mp4"
    run_ffmpeg(ffmpeg.input(str(m["clip"]), display_rotation=90).output(str(m["rotated"]), c="copy"))
    m["vfr"] = d / "vfr.mp4"
    vfr = "setpts='PTS+if(gt(N,5),0.02/TB,0)'"  # frames 6 on arrive 20 ms late
    run_ffmpeg(clip.video.output(str(m["vfr"]), vf=vfr, fps_mode="vfr", **X264_FAST))
    m["two_audio"] = d / "two_audio.mp4"
    run_ffmpeg(ffmpeg.output(clip.video, clip.audio, clip.audio, str(m["two_audio"]), c="copy"))
    other = ffmpeg.input(str(data_dir / "videos" / "retalking_face_5.mp4"), ss="1", t="0.6").video
    first = ffmpeg.input(str(m["no_audio"])).video.filter("scale", 320, 240).filter("setsar", 1)
    second = other.filter("scale", -2, 240).filter("crop", "iw", 240).filter("scale", 320, 240)
    joined = ffmpeg.concat(first, second.filter("setsar", 1), n=2, v=1)
    m["cut_scene"] = d / "scene_cut.mp4"
    run_ffmpeg(joined.output(str(m["cut_scene"]), **X264_FAST))
    m["no_face"] = d / "no_face.mp4"
    pattern = "testsrc2=size=320x240:rate=25:duration=0.6"
    run_ffmpeg(ffmpeg.input(pattern, f="lavfi").output(str(m["no_face"]), **X264_FAST))
    m["unicode"] = d / "vidéo ünïcode 视频.mp4"
    shutil.copyfile(m["clip"], m["unicode"])
    faststart = d / "faststart.mp4"
    run_ffmpeg(clip.output(str(faststart), c="copy", movflags="+faststart"))
    data = faststart.read_bytes()
    m["truncated"] = d / "truncated.mp4"
    m["truncated"].write_bytes(data[: int(len(data) * 0.6)])  # moov first: the rest is cut off
    plain = m["clip"].read_bytes()
    m["moov_less"] = d / "moov_less.mp4"
    m["moov_less"].write_bytes(plain[: int(len(plain) * 0.7)])  # moov at the end: cut off with it
    m["zero"] = d / "zero.mp4"
    m["zero"].write_bytes(b"")
    m["text"] = d / "notes.mp4"
    m["text"].write_text("this is not a video\n")
    m["audio_only"] = d / "audio_only.mp4"
    run_ffmpeg(clip.audio.output(str(m["audio_only"]), acodec="copy"))
    m["png_video"] = d / "frame.png"
    Image.fromarray(load_photo("obama_a.jpg")).resize((240, 300)).save(m["png_video"])
    m["folder"] = d / "a_folder"
    m["folder"].mkdir()

    m["photo"] = data_dir / "faces" / "obama_a.jpg"
    m["two_faces"] = data_dir / "faces" / "obama_biden_two_people.jpg"
    grey16 = np.asarray(Image.fromarray(load_photo("obama_a.jpg")).convert("L")).astype(np.uint16) * 257
    m["grey16"] = d / "grey16.png"
    Image.fromarray(grey16).save(m["grey16"])
    m["palette"] = d / "palette.png"
    Image.fromarray(load_photo("obama_a.jpg")).convert("P", palette=Image.Palette.ADAPTIVE).save(m["palette"])
    m["no_face_photo"] = d / "wall.jpg"
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(m["no_face_photo"])
    m["text_photo"] = d / "notes.jpg"
    m["text_photo"].write_text("not a photo\n")

    weights = d / "weights"
    weights.mkdir()
    from models.aei_net import TINY_AEI_CONFIG, AEINet
    from models.arcface import iresnet50

    torch.manual_seed(0)
    good_arcface = d / "good_arcface.pth"
    torch.save(iresnet50().state_dict(), good_arcface)
    m["arcface_r50"] = good_arcface
    m["tiny_aei"] = d / "tiny_aei.pth"
    torch.save(AEINet(**TINY_AEI_CONFIG).state_dict(), m["tiny_aei"])
    m["weights"] = weights
    return m


@dataclass
class Case:
    name: str
    input: str = "clip"  # a key of ``media`` or a path relative to the case folder
    source: str = "photo"
    args: list[str] = field(default_factory=list)
    code: int = 2
    says: str = ""  # text the stderr line must hold ("" with code 0: no stderr line)
    output: str = "out.mp4"  # relative to the case folder; "{input}" = the input file itself
    setup: str = ""  # name of a preparation step (see prepare)


LOCAL = ["executor=local", "--quiet"]
CASES = [
    # inputs that are not usable videos
    Case("zero-byte file", input="zero", says="not a readable video"),
    Case("moov-less MP4", input="moov_less", says="not a readable video"),
    Case("text named .mp4", input="text", says="not a readable video"),
    Case("audio-only file", input="audio_only", says="has no video stream"),
    Case("PNG given as the video", input="png_video", says="is a still image (png), not a video"),
    Case("JPEG given as the video", input="photo", says="is a still image (mjpeg), not a video"),
    Case("missing input", input="nowhere.mp4", says="no such file"),
    Case("input is a folder", input="folder", says="is a folder"),
    # source photos
    Case("missing source", source="nowhere.jpg", says="no such file"),
    Case("source is a folder", source="folder", says="is a folder"),
    Case("source is a video", source="clip", says="not a readable image"),
    Case("text named .jpg", source="text_photo", says="not a readable image"),
    Case("source without a face", source="no_face_photo", says="no face found"),
    Case("16-bit grey PNG source", source="grey16", code=0),
    Case("palette PNG source", source="palette", code=0),
    Case("two faces: the largest, and said", source="two_faces", code=0, says="shows 2 faces; using face 1"),
    Case(
        "two faces: the left one",
        source="two_faces",
        args=["swap.source_face=left"],
        code=0,
        says="using face 0 counted from the left, not the largest",
    ),
    Case("two faces: no third", source="two_faces", args=["swap.source_face=2"], says="shows 2 face(s)"),
    # outputs
    Case("existing output is refused", setup="existing_output", says="exists; choose another OUT"),
    Case("existing output with --overwrite", setup="existing_output", args=["--overwrite"], code=0),
    Case("output is the input", output="{input}", setup="own_copy", says="output path is the input video"),
    Case("output is the input by symlink", output="link.mp4", setup="symlink", says="is the input video"),
    Case("output is the input by hard link", output="hard.mp4", setup="hardlink", says="is the input video"),
    Case("output folder missing", output="no/such/dir/out.mp4", says="does not exist"),
    Case("output suffix", output="out.txt", says="must end in .mp4, .mov or .mkv"),
    Case("output is a folder", output="outdir", setup="output_folder", says="is a folder"),
    # configuration
    Case("unknown config key", args=["swap.colour=red"], says="unknown config key swap.colour"),
    Case("negative batch size", args=["batch_size=-3"], says="batch_size=-3: should be greater than"),
    Case("zero batch size", args=["batch_size=0"], says="batch_size=0: should be greater than"),
    Case("crf out of range", args=["encode.crf=99"], says="encode.crf=99: should be less than"),
    Case("crf above x264's 51", args=["encode.crf=60"], says="libx264 takes 0 to 51"),
    Case("smoothing out of range", args=["classic.color_smoothing=1.5"], says="should be less than 1"),
    Case("negative face size", args=["detect.min_face_size=-5"], says="detect.min_face_size=-5"),
    Case("unknown codec", args=["encode.codec=libnothing"], says="no such encoder"),
    Case("unknown preset", args=["encode.preset=fastest"], says="libx264 refuses encode.preset='fastest'"),
    Case("missing config file", args=["--config", "nowhere.yaml"], says="config file not found"),
    Case("config file not YAML", setup="bad_yaml", says="not valid YAML: expected ',' or ']', but got"),
    # user-supplied weights (configs/faceshifter.yaml)
    Case("weights folder empty", setup="weights:empty", says="G_unet_2blocks.pth"),
    Case("random bytes as the generator", setup="weights:random", says="not a weights-only torch file"),
    Case("generator file cut short", setup="weights:cut", says="not a weights-only torch file"),
    Case("generator of another layout", setup="weights:layout", says="does not fit AEINet"),
    # inputs that work
    Case("plain clip", code=0),
    Case("a killed run's partial file is removed", setup="stale_partial", code=0),
    Case("no audio", input="no_audio", code=0),
    Case("two audio streams", input="two_audio", code=0),
    Case("no face in the video", input="no_face", code=0),
    Case("variable frame rate", input="vfr", code=0),
    Case("rotation metadata", input="rotated", code=0),
    Case("odd frame size", input="odd", code=0),
    Case("VP9 in WebM", input="webm", code=0),
    Case("MOV container", input="mov", code=0),
    Case("10-bit H.264", input="ten_bit", code=0),
    Case("HEVC", input="hevc", code=0),
    Case("scene cut", input="cut_scene", code=0),
    Case("unicode names", input="unicode", output="sortie é 输出.mp4", code=0),
    Case("truncated MP4: what decodes, and said", input="truncated", code=0, says="frames decoded"),
]


def prepare(case: Case, media: dict[str, Path], folder: Path) -> tuple[Path, Path, list[str]]:
    """The case's input, source and extra arguments, with its preparation done in ``folder``."""

    def resolve(name: str) -> Path:
        return media[name] if name in media else folder / name

    video, source, extra = resolve(case.input), resolve(case.source), []
    output = video if case.output == "{input}" else folder / case.output
    step = case.setup
    if step == "existing_output":
        output.write_bytes(b"an earlier result")
    elif step == "own_copy":
        video = folder / "mine.mp4"
        shutil.copyfile(media["clip"], video)
        output = video
    elif step == "symlink":
        video = folder / "mine.mp4"
        shutil.copyfile(media["clip"], video)
        output.symlink_to(video)
    elif step == "hardlink":
        video = folder / "mine.mp4"
        shutil.copyfile(media["clip"], video)
        os.link(video, output)
    elif step == "output_folder":
        output.mkdir()
    elif step == "stale_partial":  # as a run killed with SIGKILL leaves it (a pid no process has)
        import socket

        (folder / f".old.partial-{2**22 + 12345}@{socket.gethostname()}.mp4").write_bytes(b"half a video")
    elif step == "bad_yaml":
        (folder / "bad.yaml").write_text("swap: [unclosed\n")
        extra = ["--config", str(folder / "bad.yaml")]
    elif step.startswith("weights:"):
        weights = folder / "weights"
        weights.mkdir()
        kind = step.split(":")[1]
        generator = weights / "G_unet_2blocks.pth"
        if kind == "random":
            generator.write_bytes(np.random.default_rng(0).bytes(200_000))
        elif kind == "cut":
            generator.write_bytes(media["tiny_aei"].read_bytes()[:50_000])
        elif kind == "layout":
            shutil.copyfile(media["tiny_aei"], generator)  # a 64 px AEI-Net: other shapes
        shutil.copyfile(media["arcface_r50"], weights / "arcface_r50_backbone.pth")
        extra = [
            "--config",
            str(CONFIG_DIR / "faceshifter.yaml"),
            f"weights.dir={weights}",
            "faceshifter.arcface=arcface_iresnet50",
        ]
    return video, source, extra


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_corpus(case: Case, media, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()
    video, source, extra = prepare(case, media, folder)
    output = video if case.output == "{input}" else folder / case.output
    args = [arg.replace("nowhere.yaml", str(folder / "nowhere.yaml")) for arg in case.args]
    inputs = [p for p in (video, source) if p.exists()]
    before = {p: digest(p) for p in inputs}
    existing = digest(output) if output.exists() and not output.is_dir() else None
    cmd = swap_command(video, source, output, *LOCAL, *extra, *args)
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == case.code, run.stderr
    assert "Traceback" not in run.stderr
    assert len(lines) <= 1, run.stderr
    if case.says:
        assert lines and case.says in lines[0], run.stderr
    elif case.code == 0:
        assert not lines, run.stderr
    assert {p: digest(p) for p in inputs} == before  # no input changed
    leftovers = [p.name for p in output.parent.glob(".*partial*")] if output.parent.is_dir() else []
    assert not leftovers
    if case.code == 0:
        assert output.is_file() and output.stat().st_size > 1000 and "swapstream:" in run.stdout
    elif existing is not None:
        assert digest(output) == existing  # an existing output is kept as it was
    elif case.setup not in ("own_copy", "symlink", "hardlink", "output_folder"):
        assert not output.exists()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 2.0, 4.0])
def test_ctrl_c_at_any_moment_leaves_nothing(media, tmp_path, delay):
    """SIGINT while starting, detecting or encoding: exit 130 and one line, or (when the run was already
    done) exit 0 with a complete output; never a partial file or a traceback."""
    import signal

    output = tmp_path / "out.mp4"
    cmd = swap_command(media["clip"], media["photo"], output, *LOCAL)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) <= 1, err
    if proc.returncode == 130:
        assert lines == ["swapstream: interrupted; no output written"] and not output.exists()
    else:
        assert proc.returncode == 0 and output.is_file() and "swapstream:" in out, err
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
def test_ctrl_c_while_ray_shuts_down_is_quiet(media, tmp_path):
    """SIGINT right after the summary line, while the embedded Ray shuts down: the output is complete, so
    exit 0, no traceback, nothing on stderr."""
    import signal

    output = tmp_path / "out.mp4"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = swap_command(media["clip"], media["photo"], output, "executor=ray", "--quiet")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    summary = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert summary.startswith("swapstream:") and proc.returncode == 0, err
    assert "Traceback" not in err and not err.strip(), err
    assert output.is_file() and not list(tmp_path.glob(".*partial*"))


# --------------------------------------------------------------------------------------------- fuzzing


@pytest.mark.slow
def test_fuzzed_clips_and_photos_end_in_frames_or_one_error(media):
    """Random cuts, byte flips and garbage of a real clip and photo, through probing, decoding and photo
    loading: each either works or raises our one-line error (SwapstreamError), within a time limit."""
    from models.errors import SwapstreamError
    from pipeline.run import load_image
    from stages.decode import probe, read_batches

    rng = np.random.default_rng(15)
    clip, photo = media["clip"].read_bytes(), media["photo"].read_bytes()
    folder = media["folder"].parent / "fuzz"
    folder.mkdir(exist_ok=True)
    outcomes = {"ok": 0, "error": 0}
    started = time.monotonic()
    for k in range(60):
        base = clip if k % 2 == 0 else photo
        data = bytearray(base)
        how = k % 3
        if how == 0:
            data = data[: int(rng.integers(0, len(data)))]
        elif how == 1:
            for at in rng.integers(0, len(data), size=int(rng.integers(1, 64))):
                data[at] ^= int(rng.integers(1, 256))
        else:
            start = int(rng.integers(0, len(data)))
            data[start : start + 4096] = rng.bytes(min(4096, len(data) - start))
        path = folder / (f"fuzz{k}.mp4" if k % 2 == 0 else f"fuzz{k}.jpg")
        path.write_bytes(bytes(data))
        t0 = time.monotonic()
        try:
            if k % 2 == 0:
                probe(path)
                frames = sum(len(b) for b in read_batches(path, 8))
                assert frames >= 1
            else:
                image = load_image(path)
                assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
            outcomes["ok"] += 1
        except SwapstreamError as exc:
            assert str(exc).strip() and "\n" not in str(exc).strip(), repr(exc)
            assert str(path) in str(exc)
            outcomes["error"] += 1
        assert time.monotonic() - t0 < 30, f"case {k} took too long"
        assert path.read_bytes() == bytes(data)  # the damaged input itself is never changed
    assert outcomes["ok"] and outcomes["error"], outcomes  # both kinds were exercised
    assert time.monotonic() - started < 300
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"fuzz{k}.{'mp4' if k % 2 == 0 else 'jpg'}" for k in range(60)
    )
