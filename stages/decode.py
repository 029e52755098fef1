"""Decode: stream a video file into FrameBatches (PyAV), display orientation, pts kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from models.errors import InputError, reason
from stages.types import FrameBatch

__all__ = [
    "FrameTable",
    "InputError",
    "VideoInfo",
    "frame_table",
    "probe",
    "read_batches",
    "read_range",
    "rotate",
]


@dataclass
class VideoInfo:
    """What the encoder needs to know about the input video stream.

    width, height: display size after rotation. rotation: clockwise degrees applied to decoded frames.
    time_base: of the video stream; frame pts are in this unit. frames: container's count (0 if unknown).
    duration: seconds of the video stream as the container states it (None if unknown).
    """

    path: str
    width: int
    height: int
    time_base: Fraction
    average_rate: Fraction | None
    rotation: int
    frames: int
    codec: str
    audio_streams: int
    metadata: dict = field(default_factory=dict)
    duration: float | None = None

    def expected_frames(self) -> int | None:
        """Frames the container promises: its frame count, else duration x average rate (None if unknown)."""
        if self.frames:
            return int(self.frames)
        if self.duration and self.average_rate:
            return round(self.duration * float(self.average_rate))
        return None


def _rotation_of(frame: av.VideoFrame) -> int:
    """Clockwise rotation in degrees (0, 90, 180, 270) that brings ``frame`` to display orientation.

    PyAV reports the display matrix angle counter-clockwise (as ffmpeg's av_display_rotation_get);
    the ffmpeg CLI turns the picture clockwise by the negated angle, and so do we.
    """
    angle = round(float(getattr(frame, "rotation", 0) or 0))
    return (-angle) % 360


def rotate(image: np.ndarray, clockwise_degrees: int) -> np.ndarray:
    """Rotate ``(H, W, 3)`` by 0/90/180/270 degrees clockwise (contiguous copy when rotated)."""
    if clockwise_degrees == 0:
        return image
    k = {90: 3, 180: 2, 270: 1}.get(clockwise_degrees)
    if k is None:
        raise InputError(f"unsupported rotation {clockwise_degrees} degrees")
    return np.ascontiguousarray(np.rot90(image, k=k))


def probe(path: str | Path) -> VideoInfo:
    """Open ``path`` and decode its first frame; raise InputError when it is not a readable video."""
    path = str(path)
    if Path(path).is_dir():
        raise InputError(f"{path}: is a folder; give a video file")
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            if container.format.name == "image2" or container.format.name.endswith("_pipe"):
                raise InputError(
                    f"{path}: is a still image ({stream.codec_context.name}), not a video; give a video file"
                )
            first = next(container.decode(stream), None)
            if first is None:
                raise InputError(f"{path}: video stream has no decodable frames")
            rot = _rotation_of(first)
            w, h = (first.height, first.width) if rot in (90, 270) else (first.width, first.height)
            return VideoInfo(
                path=path,
                width=w,
                height=h,
                time_base=stream.time_base,
                average_rate=stream.average_rate,
                rotation=rot,
                frames=stream.frames or 0,
                codec=stream.codec_context.name,
                audio_streams=len(container.streams.audio),
                metadata=dict(container.metadata),
                duration=_duration(container, stream),
            )
    except InputError:
        raise
    except (av.FFmpegError, StopIteration, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable video ({reason(exc)})") from None


def _duration(container, stream) -> float | None:
    """Seconds of ``stream`` as the container states them: the stream's duration, else the container's."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / av.time_base
    return None


def read_batches(path: str | Path, batch_size: int, video_id: str | None = None) -> Iterator[FrameBatch]:
    """Yield FrameBatches of up to ``batch_size`` consecutive frames, streaming (never the whole video).

    frames: ``(N, H, W, 3) uint8`` RGB in display orientation; pts in the video stream's time base.
    A decoding error after the first frame (a file cut short or damaged further on) ends the stream: what
    decoded is kept, and the caller compares the count with :meth:`VideoInfo.expected_frames`.
    """
    path = str(path)
    vid = video_id or path
    frames: list[np.ndarray] = []
    pts: list[int] = []
    index = 0
    last_pts = -1
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in _frames_until_damage(container, stream, path):
            rgb = rotate(frame.to_ndarray(format="rgb24"), _rotation_of(frame))
            p = frame.pts if frame.pts is not None else last_pts + 1
            last_pts = p
            frames.append(rgb)
            pts.append(p)
            if len(frames) == batch_size:
                yield _batch(vid, index, pts, frames)
                index += len(frames)
                frames, pts = [], []
        if frames:
            yield _batch(vid, index, pts, frames)


def _frames_until_damage(container, stream, path: str) -> Iterator[av.VideoFrame]:
    """The stream's frames, ending quietly at a decoding error once at least one frame came out."""
    count = 0
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as exc:
            if count == 0:
                raise InputError(f"{path}: no frame decodes ({exc})") from None
            return
        count += 1
        yield frame


def _batch(video_id: str, start: int, pts: list[int], frames: list[np.ndarray]) -> FrameBatch:
    return FrameBatch(
        video_id=video_id,
        indices=np.arange(start, start + len(frames), dtype=np.int64),
        pts=np.asarray(pts, dtype=np.int64),
        frames=np.stack(frames),
    )


@dataclass
class FrameTable:
    """Every video frame's pts and the keyframes, from the packets alone (nothing decoded).

    pts: ``(F,) int64`` presentation timestamps in the stream's time base, sorted: frame ``i`` (display
    order, as :func:`read_batches` numbers frames) has ``pts[i]``. keyframes: ``(K,) int64`` frame indices
    where decoding can start, ascending, always starting with 0.
    """

    pts: np.ndarray
    keyframes: np.ndarray

    def __len__(self) -> int:
        return len(self.pts)

    def keyframe_before(self, index: int) -> int:
        """The last keyframe at or before frame ``index``."""
        return int(self.keyframes[np.searchsorted(self.keyframes, index, side="right") - 1])


def frame_table(path: str | Path) -> FrameTable | None:
    """Scan the video stream's packets for their pts and keyframe flags (a fast pass: no decoding).

    Returns None when frames cannot be numbered from the packets: a packet without pts, two with the same
    pts, or a first frame that is not a keyframe. Such a video is read from its start only.
    """
    pts: list[int] = []
    key: list[bool] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None:
                    continue  # the demuxer's flush packet
                if packet.pts is None:
                    return None
                pts.append(int(packet.pts))
                key.append(bool(packet.is_keyframe))
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise InputError(f"{path}: not a readable video ({reason(exc)})") from None
    order = np.argsort(np.asarray(pts, np.int64), kind="stable")
    sorted_pts = np.asarray(pts, np.int64)[order]
    if len(sorted_pts) == 0 or np.any(np.diff(sorted_pts) <= 0):
        return None
    keyframes = np.sort(np.flatnonzero(np.asarray(key, bool)[order]))
    if len(keyframes) == 0 or keyframes[0] != 0:
        return None
    return FrameTable(sorted_pts, keyframes.astype(np.int64))


def read_range(
    path: str | Path,
    batch_size: int,
    first: int,
    stop: int,
    table: FrameTable,
    video_id: str | None = None,
) -> Iterator[FrameBatch]:
    """Frames ``first .. stop-1`` of the video as :func:`read_batches` would give them (same indices, pts,
    pixels), streaming: the demuxer seeks to the keyframe at or before ``first`` and frames before
    ``first`` are decoded but not converted. Raises InputError when the decoded frames do not follow
    ``table`` (then the video cannot be read in parts).
    """
    path = str(path)
    vid = video_id or path
    if not 0 <= first < stop <= len(table):
        raise ValueError(f"frame range {first}..{stop} is outside the video's {len(table)} frames")
    keyframe = table.keyframe_before(first)
    frames: list[np.ndarray] = []
    pts: list[int] = []
    index, start = first, first
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if keyframe > 0:
            container.seek(int(table.pts[keyframe]), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None or frame.pts < table.pts[first]:
                continue
            if index == stop:
                break
            if frame.pts != table.pts[index]:
                raise InputError(
                    f"{path}: frame {index} decodes with pts {frame.pts}, its packet says "
                    f"{table.pts[index]}; this video cannot be read in segments (set segments.parts=1)"
                )
            frames.append(rotate(frame.to_ndarray(format="rgb24"), _rotation_of(frame)))
            pts.append(int(frame.pts))
            index += 1
            if len(frames) == batch_size:
                yield _batch(vid, start, pts, frames)
                start, frames, pts = index, [], []
    if frames:
        yield _batch(vid, start, pts, frames)
    if index != stop:
        raise InputError(f"{path}: frames {index}..{stop - 1} did not decode; the video may be cut short")
