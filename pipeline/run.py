"""One swap job: validate inputs, build the stages, run them on an executor, encode with the source audio."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from models.errors import InputError
from pipeline.config import with_overrides
from pipeline.executors import StagePool, StageSpec, group_specs, make_executor, rerun_after_actor_death
from pipeline.segments import (
    FrameDigest,
    Segment,
    look_ahead_frames,
    plan,
    run_in_frames,
    run_segments,
    segment_count,
)
from pipeline.supervisor import announce
from stages.decode import FrameTable, VideoInfo, frame_table, probe, read_batches
from stages.encode import VideoWriter, check_encoder, remove_stale_partials
from stages.types import FrameBatch


@dataclass
class Summary:
    """What a finished job did."""

    frames: int
    frames_with_face: int
    faces_swapped: int
    seconds: float
    output: Path
    frames_digest: str | None = None  # of the frames handed to the encoder, when asked for (FrameDigest)
    frames_expected: int | None = None  # what the container promised (None: unknown)
    note: str | None = None  # a one-line warning about the result (frames lost to a damaged input)
    verb: str = "swapped"  # what was done to the faces: swapped | edited

    @property
    def fps(self) -> float:
        """Frames per second of wall-clock time (0 when no time passed)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"swapstream: {self.frames} frames, {self.frames_with_face} with a face, "
            f"{self.faces_swapped} faces {self.verb}, {self.seconds:.1f} s ({self.fps:.1f} frames/s) "
            f"-> {self.output}"
        )


# Photo file extensions: what load_image is for (crops and prepare-faces tell photos from videos by them).
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def load_image(path: str | Path) -> np.ndarray:
    """Read a photo as ``(H, W, 3) uint8`` RGB, upright per its EXIF orientation; InputError if unreadable.

    High-bit-depth grey (16-bit PNG and TIFF: Pillow modes ``I;16*``, ``I``, ``F``) is scaled to 8 bits by its
    bit depth rather than clipped; palette, grey and CMYK images are converted; transparent pixels
    are laid over white.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a photo")
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with Image.open(p) as im:
            return _rgb8(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image format Pillow reads" if isinstance(exc, UnidentifiedImageError) else exc
        raise InputError(f"{p}: not a readable image ({reason})") from None


def _rgb8(im) -> np.ndarray:
    """A Pillow image as ``(H, W, 3) uint8`` RGB (see :func:`load_image`)."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        grey = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            top = 65535.0
        elif im.mode == "F" and grey.max() <= 1.0:
            top = 1.0  # float images in [0, 1]
        else:  # 32-bit int or float: 16-bit data when it exceeds 8 bits
            top = 65535.0 if grey.max() > 255 else 255.0
        grey8 = np.clip(np.round(grey / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB")).copy()
    return np.asarray(im.convert("RGB")).copy()


def check_source(path: str | Path, cfg: dict) -> np.ndarray:
    """The source photo ``(H, W, 3) uint8`` RGB, after checking that the user-supplied weight files the
    config needs are present and fit their networks (keys and shapes, without loading values): the cheap
    checks, made before anything starts (ModelFileError / WeightFileError otherwise)."""
    from models.weights import verify_configured
    from pipeline.backends import BACKENDS

    needed = ["face_parser_bisenet"] if "region" in cfg["mask"]["types"] else []
    for name in [*needed, *BACKENDS[cfg["swap"]["backend"]].weights(cfg)]:
        verify_configured(name, cfg)
    return load_image(path)


def prepare_source(path: str | Path, cfg: dict, image: np.ndarray | None = None):
    """Detect the faces in the source photo, choose one (``swap.source_face``) and prepare what the swap
    backend needs from it (:data:`pipeline.backends.BACKENDS`: classic, the aligned SourceFace with its
    landmarks; faceshifter, the raw ArcFace embedding ``(512,) float32``).
    image: the photo as :func:`check_source` returned it (its checks made); read and checked here when None.
    """
    from pipeline.backends import BACKENDS
    from stages.detect import DetectStage

    if image is None:
        image = check_source(path, cfg)
    faces = DetectStage(cfg).detect_image(image)
    if not faces:
        raise InputError(f"no face found in {path}: use a photo where the face is at least 64 px wide")
    face, note = choose_source_face(path, faces, cfg["swap"]["source_face"])
    if note:
        print(note, file=sys.stderr)
    return BACKENDS[cfg["swap"]["backend"]].prepare(image, face, path, cfg)


def choose_source_face(path: str | Path, faces: list, choice: str | int):
    """The face of the source photo that ``swap.source_face`` names, and a one-line note when the photo
    shows more than one (None otherwise). faces: FaceRecords; indices count from the left (box centre x).
    InputError when the index is out of range."""
    by_x = sorted(faces, key=lambda f: float(f.box[0] + f.box[2]))
    largest = max(by_x, key=lambda f: f.area)
    if choice == "largest":
        face = largest
    elif choice == "left":
        face = by_x[0]
    elif choice == "right":
        face = by_x[-1]
    elif choice >= len(by_x):
        raise InputError(
            f"{path}: swap.source_face={choice} but the photo shows {len(by_x)} face(s), 0..{len(by_x) - 1} "
            "counted from the left"
        )
    else:
        face = by_x[choice]
    if len(by_x) == 1:
        return face, None
    k = next(i for i, f in enumerate(by_x) if f is face)
    big = next(i for i, f in enumerate(by_x) if f is largest)
    what = "the largest" if k == big else f"not the largest (that is {big})"
    return face, (
        f"swapstream: note: {path} shows {len(by_x)} faces; using face {k} counted from the left, {what}; "
        "choose with swap.source_face=largest|left|right|N"
    )


def build_specs(cfg: dict, source) -> list[StageSpec]:
    """The stage chain between decode and encode, per config (``source`` from :func:`prepare_source`)."""
    from pipeline.backends import BACKENDS
    from stages.align import AlignStage
    from stages.blend import BlendStage
    from stages.detect import DetectStage
    from stages.landmarks import LandmarkStage
    from stages.mask import MaskStage
    from stages.smooth import SmoothStage
    from stages.track import TrackStage

    swap_cls = BACKENDS[cfg["swap"]["backend"]].stage_class()
    return [
        StageSpec("detect", DetectStage, (cfg,)),
        StageSpec("landmarks", LandmarkStage, (cfg,)),
        StageSpec("track", TrackStage, (cfg,)),
        StageSpec("smooth", SmoothStage, (cfg,)),
        StageSpec("align", AlignStage, (cfg,)),
        StageSpec("swap", swap_cls, (cfg, source), num_gpus=float(cfg["ray"]["swap_num_gpus"])),
        StageSpec("mask", MaskStage, (cfg,)),
        StageSpec("blend", BlendStage, (cfg,)),
    ]


def default_output(input_path: str | Path) -> Path:
    """``<stem>.swapped.mp4`` beside the input, or in the current folder when the input's folder is read-only.

    Shared media folders are often read-only; writing the result where the user stands, and naming it in the
    summary line, beats refusing a command that gave no OUT.
    """
    p = Path(input_path)
    name = f"{p.stem}.swapped.mp4"
    read_only = p.parent.is_dir() and not os.access(p.parent, os.W_OK)
    return Path.cwd() / name if read_only else p.with_name(name)


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


def check_paths(
    input_path: Path, output: Path, overwrite: bool = True, suffixes: tuple[str, ...] = VIDEO_SUFFIXES
) -> None:
    """Refuse an output that would overwrite the input or that cannot be written; an existing output too
    unless ``overwrite`` (the command line's ``--overwrite``, as ffmpeg's ``-y``)."""
    if output.resolve() == input_path.resolve() or (output.exists() and os.path.samefile(output, input_path)):
        raise InputError(f"{output}: output path is the input video; choose another OUT")
    if output.is_file() and not overwrite:
        raise InputError(
            f"{output}: exists; choose another OUT, or pass --overwrite (make: OVERWRITE=1) to replace it"
        )
    if not output.parent.is_dir():
        raise InputError(f"{output}: output folder {output.parent} does not exist")
    if output.is_dir():
        raise InputError(f"{output}: is a folder; give the output video's file name")
    if not os.access(output.parent, os.W_OK):
        raise InputError(f"{output}: cannot write to {output.parent}; choose another OUT")
    if output.suffix.lower() not in suffixes:
        endings = " or ".join([", ".join(suffixes[:-1]), suffixes[-1]] if len(suffixes) > 1 else suffixes)
        raise InputError(f"{output}: output must end in {endings}")


def swap_video(
    input_path: str | Path,
    source_path: str | Path,
    output: str | Path | None,
    cfg: dict,
    progress: bool = True,
    digest: bool = False,
    pool=None,
    overwrite: bool = True,
) -> Summary:
    """Swap the source photo's face onto the faces of ``input_path``; write ``output`` atomically.

    digest: also hash every output frame, in order, before encoding (``Summary.frames_digest``). The
    executors are compared on this, so that a difference is found in the frame and stage where it arose,
    not through the encoder (whose own determinism is ``encode.deterministic``).
    pool: a :class:`pipeline.executors.StagePool` whose Ray actors this video shares with others
    (``executor=ray`` only). overwrite: False refuses an existing ``output`` (InputError) before any work.

    A long video may run in segments (``segments``; :mod:`pipeline.segments`). With ``executor=ray`` a
    video (or segment) whose stage actor died runs again from its start, at most ``ray.video_retries``
    times (stages keep per-video state, so a half-done run cannot resume); a closed pool means the run is
    stopping, and the error is raised at once.
    """
    input_path = Path(input_path)
    return run_video(
        input_path,
        Path(output) if output else default_output(input_path),
        cfg,
        lambda c: check_source(source_path, c),
        lambda c, image: build_specs(c, prepare_source(source_path, c, image)),
        lambda c: build_specs(c, None),
        progress,
        digest,
        pool,
        overwrite,
    )


def run_video(
    input_path: Path,
    output: Path,
    cfg: dict,
    check: Callable[[dict], Any],
    chain: Callable[[dict, Any], list[StageSpec]],
    warm_chain: Callable[[dict], list[StageSpec]],
    progress: bool = True,
    digest: bool = False,
    pool=None,
    overwrite: bool = True,
    verb: str = "swapped",
) -> Summary:
    """The body of a job on one video that the swap and the edit command share: the video probed,
    ``executor=auto`` made concrete, the output path and encoder checked, ``check(cfg)`` (the job's own
    cheap checks: weight files, the source photo; its result is handed to ``chain``), stale partial outputs
    removed, Ray's actors started and warmed with ``warm_chain(cfg)``'s stages (no per-video state), then
    the stage chain ``chain(cfg, checked)`` run over the video (:func:`run_chain`). verb: what the summary
    line says was done to the faces."""
    started = time.perf_counter()
    info = probe(input_path)
    if cfg["executor"] == "auto":
        cfg = with_overrides(cfg, [f"executor={choose_executor(cfg, info)}"])
    check_paths(input_path, output, overwrite)
    check_encoder(cfg["encode"])
    remove_stale_partials(output.parent)
    announce("folder", str(output.parent.resolve()))  # a supervising parent cleans up if this process dies
    checked = check(cfg)
    own_pool = None
    if cfg["executor"] == "ray":
        if pool is None:  # this video's own actors, restarted by Ray like a shared pool's
            pool = own_pool = StagePool.from_config(cfg)
        pool.warm(group_specs(warm_chain(cfg), cfg["ray"]["actor_groups"]))
    try:
        return run_chain(
            input_path,
            lambda: chain(cfg, checked),
            output,
            info,
            cfg,
            progress,
            digest,
            pool,
            own_pool,
            started,
            verb,
        )
    finally:
        if own_pool is not None:
            own_pool.close()


def run_chain(
    input_path: Path,
    make_specs: Callable[[], list[StageSpec]],
    output: Path,
    info: VideoInfo,
    cfg: dict,
    progress: bool,
    digest: bool,
    pool,
    own_pool,
    started: float,
    verb: str = "swapped",
) -> Summary:
    """Run the stage chain ``make_specs()`` builds (after the inputs were checked) over the video, in
    segments when planned, into ``output``; the swap's and the edit command's common body. verb: what the
    summary line says was done to the faces."""
    specs = make_specs()
    segments, table = _segments_for(input_path, info, cfg)
    hasher = FrameDigest() if digest else None
    bar = _progress(len(table) if table is not None else info.frames, progress, output.name)
    lock = threading.Lock()
    per_frame: dict[int, tuple[int, int]] = {}  # frame → (has a face, faces pasted); a rerun overwrites

    def count(batch: FrameBatch) -> None:
        if hasher is not None:
            hasher.update(batch)
        with lock:
            new = sum(1 for i in batch.indices if int(i) not in per_frame)
            for i, faces in zip(batch.indices, batch.faces):
                per_frame[int(i)] = (int(bool(faces)), sum(1 for f in faces if f.pasted))
            bar.update(new)

    try:
        if len(segments) > 1:
            run_segments(
                input_path,
                output,
                info,
                table,
                segments,
                specs,
                cfg,
                pipeline.__version__,
                count,
                pool,
                stop_pool_on_error=own_pool is not None,
            )
        else:
            _run_whole(input_path, output, info, specs, cfg, count, pool)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    with_face, swapped = (sum(column) for column in zip(*per_frame.values())) if per_frame else (0, 0)
    frames_digest = hasher.hexdigest() if hasher is not None else None
    expected = info.expected_frames()
    note = lost_frames_note(input_path, len(per_frame), expected, info)
    if note:
        print(f"swapstream: note: {note}", file=sys.stderr)
    return Summary(len(per_frame), with_face, swapped, elapsed, output, frames_digest, expected, note, verb)


def choose_executor(cfg: dict, info: VideoInfo | None = None, videos: int = 1) -> str:
    """``executor=auto`` made concrete (any other setting is returned as it is): ``ray`` when
    ``RAY_ADDRESS`` names a cluster to use, for more than one video (a batch or FF++ run shares the stage
    actors), and for a video long enough to run in segments at once (``segments``); otherwise ``local``,
    in this process, which starts in a fraction of Ray's start-up and writes the same frames.

    info: the one video's stream (None: not known, e.g. a batch deciding for all its jobs)."""
    if cfg["executor"] != "auto":
        return cfg["executor"]
    if os.environ.get("RAY_ADDRESS") or videos > 1:
        return "ray"
    if info is not None and info.average_rate:
        frames = info.frames or round((info.duration or 0.0) * float(info.average_rate))
        if segment_count(with_overrides(cfg, ["executor=ray"]), info, frames) > 1:
            return "ray"
    return "local"


def lost_frames_note(input_path: Path, decoded: int, expected: int | None, info: VideoInfo) -> str | None:
    """One line when fewer frames decoded than the container promised (a file cut short or damaged): how
    many and how many seconds; None when the count is within 2 frames (or 2 %) or unknown."""
    if not expected or expected - decoded <= max(2, 0.02 * expected):
        return None
    rate = float(info.average_rate) if info.average_rate else None
    lost = f" ({(expected - decoded) / rate:.1f} s of {expected / rate:.1f} s lost)" if rate else ""
    return (
        f"{input_path}: only {decoded} of {expected} frames decoded{lost}: the file is cut short or damaged; "
        f"the output holds the {decoded} that decoded"
    )


def _segments_for(input_path: Path, info: VideoInfo, cfg: dict) -> tuple[list[Segment], FrameTable | None]:
    """The segments the config asks for (one: run the video whole) and the frame table they index."""
    seg = cfg["segments"]
    wanted = int(seg["parts"])
    if wanted == 1 or (wanted == 0 and (cfg["executor"] != "ray" or float(seg["seconds"]) <= 0)):
        return [], None
    table = frame_table(input_path)
    if table is None:
        print(
            f"swapstream: {input_path}: its frames cannot be numbered from the packets (missing or repeated "
            "timestamps); running it whole instead of in segments",
            file=sys.stderr,
        )
        return [], None
    parts = segment_count(cfg, info, len(table))
    return plan(len(table), parts, run_in_frames(cfg), look_ahead_frames(cfg)), table


def _run_whole(input_path, output, info, specs, cfg, count, pool) -> None:
    """The video in one pass, run again from its start when a stage actor died (``ray.video_retries``)."""
    retries = int(cfg["ray"]["video_retries"]) if cfg["executor"] == "ray" else 0
    rerun_after_actor_death(
        lambda: _run_once(input_path, output, info, specs, cfg, count, pool), retries, pool, str(input_path)
    )


def _run_once(
    input_path: Path,
    output: Path,
    info: VideoInfo,
    specs: list[StageSpec],
    cfg: dict,
    count: Callable[[FrameBatch], None],
    pool,
) -> None:
    """One pass over the video into ``output`` (temporary name, renamed when complete; removed on any
    error); ``count`` sees every batch written."""
    executor = make_executor(cfg["executor"], specs, cfg, pool=pool)
    writer = VideoWriter(output, info, cfg, pipeline.__version__)

    def sink(batch: FrameBatch) -> None:
        writer.write(batch)
        count(batch)

    try:
        executor.run(read_batches(input_path, int(cfg["batch_size"]), video_id=str(input_path)), sink)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        executor.close()


def _progress(total: int, enabled: bool, name: str):
    from tqdm import tqdm

    return tqdm(total=total or None, unit="frame", desc=name, disable=not enabled, dynamic_ncols=True)
