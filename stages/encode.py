"""Encode: write FrameBatches with the source's timestamps, its audio copied packet for packet."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stages.decode import VideoInfo
from stages.types import FrameBatch

SYNTHETIC_KEY = "synthetic"


def synthetic_tag(version: str) -> dict[str, str]:
    """Container metadata marking a file as synthetic, made by swapstream ``version``."""
    text = f"synthetic video: faces swapped by swapstream {version}"
    return {"comment": text, SYNTHETIC_KEY: text}


def temporary_path(output: str | Path) -> Path:
    """Sibling name the output is written to before the final rename (same folder, same suffix)."""
    out = Path(output)
    return out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")


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
    Audio packets are interleaved by time as video is written, so memory stays bounded.
    """

    def __init__(self, output: str | Path, info: VideoInfo, cfg: dict, version: str) -> None:
        enc = cfg["encode"]
        self.output = Path(output)
        self.tmp = temporary_path(self.output)
        self.info = info
        self.watermark = bool(enc.get("watermark", False))
        self.frames_written = 0
        self._container = av.open(
            str(self.tmp),
            mode="w",
            format=_format_for(self.output),
            options={"movflags": "+use_metadata_tags"},
        )
        self._container.metadata.update(synthetic_tag(version))
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
        self._video.options = {"crf": str(enc["crf"]), "preset": str(enc["preset"])}
        self._pix_fmt = pix_fmt
        # Audio: a second demuxer over the input, read as far as the video written so far.
        self._audio_in = av.open(info.path) if info.audio_streams else None
        self._audio_map: dict[int, av.stream.Stream] = {}
        self._audio_packets = None
        self._pending = None
        if self._audio_in is not None:
            for s in self._audio_in.streams.audio:
                self._audio_map[s.index] = self._container.add_stream_from_template(s)
            self._audio_packets = self._audio_in.demux(*self._audio_in.streams.audio)

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
            self._mux_audio_until(float(pts * self.info.time_base))

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Copy audio packets whose decode time is ≤ ``seconds`` (all that remain when None)."""
        if self._audio_packets is None:
            return
        while True:
            packet = self._pending or next(self._audio_packets, None)
            self._pending = None
            if packet is None:
                self._audio_packets = None
                return
            if packet.dts is None:  # demuxer flush packets carry no data
                continue
            if seconds is not None and float(packet.dts * packet.time_base) > seconds:
                self._pending = packet
                return
            packet.stream = self._audio_map[packet.stream.index]
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoder, copy the remaining audio, close, and rename to the final name."""
        for packet in self._video.encode(None):
            self._container.mux(packet)
        self._mux_audio_until(None)
        self._container.close()
        if self._audio_in is not None:
            self._audio_in.close()
        os.replace(self.tmp, self.output)
        return self.output

    def abort(self) -> None:
        """Close without publishing: the temporary file is removed, the output path untouched."""
        for c in (self._container, self._audio_in):
            if c is not None:
                try:
                    c.close()
                except (av.FFmpegError, OSError, ValueError):
                    pass  # closing a half-written container may fail; the file is deleted next
        self.tmp.unlink(missing_ok=True)


def _format_for(output: Path) -> str:
    return {".mkv": "matroska", ".mov": "mov", ".webm": "webm"}.get(output.suffix.lower(), "mp4")
