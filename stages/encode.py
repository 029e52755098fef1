"""Encode: write FrameBatches with the source's timestamps, its audio copied packet for packet."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import socket
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from models.errors import ConfigError
from stages.decode import VideoInfo
from stages.types import FrameBatch

SYNTHETIC_KEY = "synthetic"


def synthetic_tag(version: str) -> dict[str, str]:
    """Container metadata marking a file as synthetic, made by swapstream ``version``."""
    text = f"synthetic video: faces swapped by swapstream {version}"
    return {"comment": text, SYNTHETIC_KEY: text}


def temporary_path(output: str | Path) -> Path:
    """Sibling name the output is written to before the final rename (same folder, same suffix), naming
    the writing process and its machine: ``.<stem>.partial-<pid>@<host><suffix>``."""
    out = Path(output)
    return out.with_name(f".{out.stem}.partial-{os.getpid()}@{socket.gethostname()}{out.suffix}")


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the partial outputs (:func:`temporary_path` names) in ``folder`` whose writing process on this
    machine is gone (killed before it could clean up); a live process's file, and one another machine is
    writing into a shared folder, are left alone. Returns what went."""
    gone = []
    here = socket.gethostname()
    for path in Path(folder).glob(".*.partial-*"):
        tail = path.name.rpartition(".partial-")[2].removesuffix(path.suffix)
        pid, _, host = tail.partition("@")
        if not re.fullmatch(r"\d+", pid) or host not in ("", here) or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            gone.append(path)
    return gone


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (ours, or one we may not signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def draw_watermark(frames: np.ndarray) -> np.ndarray:
    """Draw a visible 'SYNTHETIC' mark in the bottom-left corner of ``(N, H, W, 3) uint8`` frames."""
    import cv2

    h = frames.shape[1]
    scale = max(0.4, h / 720.0)
    for frame in frames:
        org = (int(10 * scale), h - int(12 * scale))
        cv2.putText(frame, "SYNTHETIC", org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), int(4 * scale) + 1)
        cv2.putText(frame, "SYNTHETIC", org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), int(scale) + 1)
    return frames


class VideoWriter:
    """Encodes frames with libx264 (config ``encode``), copies the input's audio streams, tags the file.

    Writes to a temporary sibling and renames to ``output`` in :meth:`close`; :meth:`abort` removes it.
    Audio packets are interleaved by time as video is written, so memory stays bounded; ``audio=False``
    writes the video alone (a segment of a video run in parts: the join copies the audio once).
    """

    def __init__(
        self, output: str | Path, info: VideoInfo, cfg: dict, version: str, audio: bool = True
    ) -> None:
        enc = cfg["encode"]
        self.output = Path(output)
        self.tmp = temporary_path(self.output)
        self.info = info
        self.watermark = bool(enc.get("watermark", False))
        self.frames_written = 0
        self._container = _open_tagged(self.tmp, self.output, version)
        pix_fmt = enc["pix_fmt"]
        if pix_fmt == "yuv420p" and (info.width % 2 or info.height % 2):
            pix_fmt = "yuv444p"  # 4:2:0 needs even sizes; keep every pixel rather than crop or pad
        rate = info.average_rate or Fraction(25)
        self._video = self._container.add_stream(enc["codec"], rate=rate)
        self._video.width = info.width
        self._video.height = info.height
        self._video.pix_fmt = pix_fmt
        self._video.time_base = info.time_base
        self._video.codec_context.time_base = info.time_base
        self._video.options = {"crf": str(enc["crf"]), "preset": str(enc["preset"]), **x264_options(enc)}
        self._pix_fmt = pix_fmt
        self._audio = AudioCopy(info, self._container) if audio else None
        keep_start_times(self._container)

    def write(self, batch: FrameBatch) -> None:
        """Encode a batch: ``frames (N, H, W, 3) uint8`` RGB with their input pts."""
        frames = batch.frames
        if self.watermark:
            frames = draw_watermark(np.array(frames, copy=True))
        for rgb, pts in zip(frames, batch.pts):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = frame.reformat(format=self._pix_fmt)
            frame.pts = int(pts)
            frame.time_base = self.info.time_base
            for packet in self._video.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1
            if self._audio is not None:
                self._audio.until(float(pts * self.info.time_base))

    def close(self) -> Path:
        """Flush the encoder, copy the remaining audio, close, and rename to the final name."""
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.until(None)
            self._audio.close()
        self._container.close()
        os.replace(self.tmp, self.output)
        return self.output

    def abort(self) -> None:
        """Close without publishing: the temporary file is removed, the output path untouched."""
        _close_quietly(self._container, self._audio)
        self.tmp.unlink(missing_ok=True)


CRF_MAX = {"libx264": 51, "libx265": 51}  # encoders whose crf scale ends below 63 (libvpx, libaom: 63)


def check_encoder(enc: dict) -> None:
    """Open the configured encoder (``cfg["encode"]``) on a small frame with the options a run would give
    it, before any frame is decoded: a codec this ffmpeg lacks, a preset, crf or pixel format it refuses
    stops here with a one-line ConfigError rather than after the whole clip was processed. The encoder's
    own messages (libx264 and libx265 print them themselves) are kept off the terminal."""
    codec = str(enc["codec"])
    crf = enc["crf"]
    if codec in CRF_MAX and not 0 <= crf <= CRF_MAX[codec]:
        raise ConfigError(f"encode.crf={crf!r}: {codec} takes 0 to {CRF_MAX[codec]} (lower = better)")
    try:
        kind = av.codec.Codec(codec, "w").type
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise ConfigError(f"encode.codec={codec!r}: this ffmpeg has no such encoder (e.g. libx264)") from None
    if kind != "video":
        raise ConfigError(f"encode.codec={codec!r} is not a video encoder")
    with _stderr_silenced():
        opened = _opens(codec, enc)
    if not opened:
        settings = f"encode.preset={enc['preset']!r}, encode.crf={crf!r}, encode.pix_fmt={enc['pix_fmt']!r}"
        raise ConfigError(f"{codec} refuses {settings}; `ffmpeg -h encoder={codec}` lists what it takes")


def _opens(codec: str, enc: dict) -> bool:
    """Whether ``codec`` opens on a 64x64 frame with the run's options (the context is freed here)."""
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.time_base = 64, 64, Fraction(1, 25)
    try:
        context.pix_fmt = str(enc["pix_fmt"])
        context.options = {"crf": str(enc["crf"]), "preset": str(enc["preset"]), **x264_options(enc)}
        context.open()
    except (av.FFmpegError, ValueError):
        return False
    finally:
        del context
    return True


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points at the null device for the block (libraries that print there directly)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def x264_options(enc: dict) -> dict[str, str]:
    """Encoder options that make libx264 give the same bytes for the same frames (``encode.deterministic``).

    On a CPU with AVX-512, the libx264 in PyAV's wheel gave different output run to run for the same frames
    (a 480 × 480 clip, 75 frames: four different results in five encodes within one process, each a fresh
    encoder; the first 9 frames equal, then differences spreading up from the bottom rows). The fault lies
    in its AVX-512 code, most likely the macroblock tree's reading memory it never wrote (not traced
    further): with ``mbtree=0`` or with x264 held to AVX2 the encodes agree, and AVX2 and AVX give the same
    bytes. Holding it to AVX2 (``asm=AVX2``) keeps the macroblock tree (``mbtree=0`` made the file 13 %
    larger at the same crf) and measured no slower here. It is asked for only where the CPU has AVX-512
    (read from ``/proc/cpuinfo``; elsewhere nothing changes), because naming an instruction set the CPU
    lacks would crash the encoder."""
    if enc["codec"] != "libx264" or not enc.get("deterministic", True) or not _cpu_has_avx512():
        return {}
    return {"x264-params": "asm=AVX2"}


@functools.lru_cache(maxsize=1)
def _cpu_has_avx512() -> bool:
    """Whether the CPU reports AVX-512 (foundation and byte/word, what x264's AVX-512 code needs); False
    where ``/proc/cpuinfo`` cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return {"avx512f", "avx512bw"} <= flags
    return False


def _format_for(output: Path) -> str:
    return {".mkv": "matroska", ".mov": "mov", ".webm": "webm"}.get(output.suffix.lower(), "mp4")


def _open_tagged(tmp: Path, output: Path, version: str):
    """A container for writing ``output`` at its temporary name ``tmp`` (format from ``output``'s suffix),
    carrying the synthetic-media tag (MP4/MOV keep it as metadata tags)."""
    container = av.open(
        str(tmp), mode="w", format=_format_for(output), options={"movflags": "+use_metadata_tags"}
    )
    container.metadata.update(synthetic_tag(version))
    return container


MAX_MOVIE_TIMESCALE = 2**31 - 1  # the MP4 movie header's timescale is 32 bits


def keep_start_times(container) -> None:
    """MP4/MOV ``container`` (streams added, nothing written yet): write its edit lists in a movie
    timescale that every stream's time base divides, so each stream's start reads back exactly.

    The muxer's default timescale, 1000, rounds the empty edit before a stream's first sample to the
    millisecond: a cut whose first frame is at 0.8342 s came back at 0.8340 s and its copied audio 31
    samples early, so neither the timestamps nor the audio packets were the input's any more. When the
    least common multiple does not fit in 32 bits, the finest time base (rounding below one of its ticks).
    Other containers are left alone (Matroska stores times per block)."""
    if container.format.name not in ("mp4", "mov"):
        return
    dens = [s.time_base.denominator for s in container.streams if s.time_base is not None]
    if not dens:
        return
    scale = math.lcm(*dens)
    if scale > MAX_MOVIE_TIMESCALE:
        scale = max(dens)
    container.options["movie_timescale"] = str(scale)  # read when the header is written (first packet)


def _close_quietly(*things) -> None:
    for thing in things:
        if thing is not None:
            try:
                thing.close()
            except (av.FFmpegError, OSError, ValueError):
                pass  # closing a half-written container may fail; the file is deleted next


class AudioCopy:
    """Copies the input's audio streams into ``container`` packet for packet (byte-identical), as far as
    the video written so far: a second demuxer over the input, read on demand, so memory stays bounded."""

    def __init__(self, info: VideoInfo, container) -> None:
        self._input = av.open(info.path) if info.audio_streams else None
        self._container = container
        self._map: dict[int, av.stream.Stream] = {}
        self._packets = None
        self._pending = None
        if self._input is not None:
            for s in self._input.streams.audio:
                self._map[s.index] = container.add_stream_from_template(s)
            self._packets = self._input.demux(*self._input.streams.audio)

    def until(self, seconds: float | None) -> None:
        """Copy audio packets whose decode time is ≤ ``seconds`` (all that remain when None)."""
        if self._packets is None:
            return
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                self._packets = None
                return
            if packet.dts is None:  # demuxer flush packets carry no data
                continue
            if seconds is not None and float(packet.dts * packet.time_base) > seconds:
                self._pending = packet
                return
            packet.stream = self._map[packet.stream.index]
            self._container.mux(packet)

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None


def _stream_key(stream) -> tuple:
    """What must match for packets of two streams to be decoded as one: codec, its extradata (H.264's
    SPS/PPS), the time base and the picture size."""
    cc = stream.codec_context
    return (cc.name, bytes(cc.extradata or b""), stream.time_base, cc.width, cc.height)


def join_segments(parts: list[Path], info: VideoInfo, output: str | Path, version: str) -> Path:
    """Copy the video packets of ``parts`` (files :class:`VideoWriter` wrote with ``audio=False``, in frame
    order) into ``output`` without decoding them, with the input's audio copied once and the synthetic tag;
    written to a temporary sibling and renamed when complete (removed on any error).

    Every packet keeps its pts. Its dts too, except where a part's first packets would not decode after
    the previous part's last one (B-frame delay at a seam): there dts is raised to one tick after the
    previous packet's, which never passes the packet's pts (checked) and changes nothing a player shows.
    """
    out = Path(output)
    tmp = temporary_path(out)
    container = _open_tagged(tmp, out, version)
    audio = None
    inputs: list = []
    try:
        first = av.open(str(parts[0]))
        inputs.append(first)
        template = first.streams.video[0]
        video = container.add_stream_from_template(template)
        video.time_base = template.time_base
        expected = _stream_key(template)  # the parts share the codec, its headers and the time base
        audio = AudioCopy(info, container)
        keep_start_times(container)
        last_dts: int | None = None
        for k, part in enumerate(parts):
            src = first if k == 0 else av.open(str(part))
            if k:
                inputs.append(src)
            stream = src.streams.video[0]
            if _stream_key(stream) != expected:
                raise RuntimeError(
                    f"{part}: its video stream (codec, headers or time base) differs from the first part's; "
                    "the parts cannot be joined without re-encoding"
                )
            for packet in src.demux(stream):
                if packet.dts is None:
                    continue
                if last_dts is not None and packet.dts <= last_dts:
                    packet.dts = last_dts + 1
                    if packet.pts is not None and packet.dts > packet.pts:
                        raise RuntimeError(f"{part}: packet at pts {packet.pts} cannot follow the last part")
                last_dts = packet.dts
                audio.until(float(packet.dts * stream.time_base))
                packet.stream = video
                container.mux(packet)
            src.close()
        audio.until(None)
        audio.close()
        container.close()
        os.replace(tmp, out)
        return out
    except BaseException:
        _close_quietly(container, audio, *inputs)
        tmp.unlink(missing_ok=True)
        raise
