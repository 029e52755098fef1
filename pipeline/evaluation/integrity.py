"""Video streams and container integrity: frames one at a time, timestamps, audio packets, background PSNR."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BACKGROUND_GROW = 0.25  # face boxes grown by this share of their size on each side before background PSNR
PSNR_CAP_DB = 100.0  # PSNR of identical pixels is reported as this (JSON has no infinity)
MIN_BACKGROUND_PSNR_DB = 30.0  # integrity.background_ok threshold on the worst frame
TIME_TOLERANCE_S = 1e-4  # timestamps equal when they differ by less than this


def mse_outside(
    original: np.ndarray, output: np.ndarray, boxes: list[np.ndarray], grow: float
) -> float | None:
    """Mean squared error (0-255 scale) of two ``(H, W, 3) uint8`` frames outside every box grown by
    ``grow`` × its size on each side; None when the boxes cover the whole frame."""
    h, w = original.shape[:2]
    keep = np.ones((h, w), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        bw, bh = x2 - x1, y2 - y1
        keep[
            max(0, int(y1 - grow * bh)) : min(h, int(y2 + grow * bh) + 1),
            max(0, int(x1 - grow * bw)) : min(w, int(x2 + grow * bw) + 1),
        ] = False
    if not keep.any():
        return None
    diff = original[keep].astype(np.float32) - output[keep].astype(np.float32)
    return float((diff**2).mean())


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB (peak 255), capped at ``PSNR_CAP_DB`` (identical pixels)."""
    if mse <= 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def stream_frames(path: str | Path, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(pts, frame ``(H, W, 3) uint8`` RGB) one at a time, decoded in batches (never the whole video)."""
    from stages.decode import read_batches

    for batch in read_batches(path, batch_size):
        for p, frame in zip(batch.pts, batch.frames):
            yield int(p), frame


def time_base(path: str | Path) -> Fraction:
    """Time base (seconds per pts tick) of the first video stream of ``path``."""
    with av.open(str(path)) as c:
        return c.streams.video[0].time_base


def demux_summary(path: str | Path) -> tuple[int, list[tuple[int | None, int, str]]]:
    """Video packet count and ``(pts, dts, sha256)`` of every audio packet (no decoding)."""
    video_packets = 0
    audio: list[tuple[int | None, int, str]] = []
    with av.open(str(path)) as c:
        streams = [*c.streams.video[:1], *c.streams.audio]
        for packet in c.demux(*streams):
            if packet.dts is None:
                continue
            if packet.stream.type == "video":
                video_packets += 1
            else:
                audio.append((packet.pts, packet.dts, hashlib.sha256(bytes(packet)).hexdigest()))
    return video_packets, audio
