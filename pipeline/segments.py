"""Long videos in parts: split a video into segments that run at once, encode each, join without re-encoding.

A segment owns frames ``start .. end-1`` of the output. It processes more than that: a run-in of
:func:`run_in_frames` frames before ``start``, so the stateful stages (landmark smoothing, the colour and
mask filters along each track) reach the state the unsegmented run has there, and a run-out of
:func:`look_ahead_frames` after ``end``, the look-ahead of the smoothing stage. Decoding starts at the
keyframe at or before the run-in (frames before the run-in are decoded, not processed). Only the frames
a segment owns are encoded, each segment into its own MP4 file (which keeps the stream's time base and
every pts), and :func:`stages.encode.join_segments` copies their packets into the output in order,
with the source's audio copied once. The frames handed to the encoders are those of the unsegmented run
(tests check this bit for bit); only the encoder's choices differ at the seams (each segment starts with
a keyframe).

Config (``segments`` section, configs/default.yaml):
    segments.parts     split into exactly this many segments (0: from segments.seconds; 1: never split).
    segments.seconds   with executor=ray and parts 0, a video longer than twice this many seconds is split
                       into segments of about this length; 0: never.
Segments run ``ray.concurrent_videos`` at a time on one shared pool of stage actors; with
``executor=local`` they run one after another (same frames, no speed-up: for checks and debugging).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.executors import StagePool, StageSpec, make_executor, rerun_after_actor_death
from stages.decode import FrameTable, VideoInfo, read_range
from stages.types import FrameBatch

# Filters that decay as a**k reach the unsegmented run's state to this relative precision (below float32's).
SETTLED = 2.0**-30


@dataclass(frozen=True)
class Segment:
    """One part of a video: writes frames ``start .. end-1``, processes frames ``first .. last-1``."""

    number: int
    start: int
    end: int
    first: int
    last: int


def look_ahead_frames(cfg: dict) -> int:
    """Frames after a segment's end that its last frames depend on: the smoothing window's half plus the
    longest bridged drop-out (0 when smoothing is off)."""
    sm = cfg["smooth"]
    return int(sm["window"]) // 2 + int(sm["max_gap"]) if sm["enabled"] else 0


def run_in_frames(cfg: dict) -> int:
    """Frames before a segment's start that bring every stateful stage to the unsegmented run's state there.

    First the look-back of the smoothing window and drop-out bridge (``look_ahead_frames``): until then a
    segment's smoothed landmarks, and so every input of the filters below, differ from the unsegmented
    run's. Then, for the exponential filters along each track (``classic.color_smoothing`` and
    ``classic.shape_smoothing`` a, ``mask.release`` r), the frames k after which a**k ≤ ``SETTLED``: where
    the two runs' states differed, they then agree to below float32 precision. Before both, the detector's
    keyframe interval (``detect.every``): the faces it carries agree from the segment's first keyframe on,
    at most ``every - 1`` frames in. They add up: with only the longer of them, a filter's state at the
    segment start still differed by tens of float32 steps (the sharpness-matching blur on KatieHill, frame
    133 of 200 in three parts), which now and then moved a pixel of the owned frames.
    """
    settle = [0]
    classic = cfg["classic"]
    for factor in (classic["color_smoothing"], classic["shape_smoothing"], cfg["mask"]["release"]):
        if 0 < float(factor) < 1:
            settle.append(math.ceil(math.log(SETTLED) / math.log(float(factor))))
    # the detector's carried faces agree from the first keyframe on, at most every - 1 frames in
    return look_ahead_frames(cfg) + 1 + max(settle) + int(cfg["detect"]["every"]) - 1


def segment_count(cfg: dict, info: VideoInfo, frames: int) -> int:
    """How many segments ``segments.parts`` / ``segments.seconds`` ask for (1: no split)."""
    seg = cfg["segments"]
    parts = int(seg["parts"])
    if parts > 0:
        return parts
    seconds = float(seg["seconds"])
    if cfg["executor"] != "ray" or seconds <= 0 or not info.average_rate:
        return 1
    duration = frames / float(info.average_rate)
    return max(1, round(duration / seconds)) if duration > 2 * seconds else 1


def plan(frames: int, parts: int, run_in: int, look_ahead: int) -> list[Segment]:
    """``parts`` segments of (nearly) equal length over ``frames`` frames, fewer when a segment would own
    fewer frames than its run-in (a split would then cost more than it gains)."""
    parts = max(1, min(int(parts), frames // max(1, run_in)))
    bounds = [round(k * frames / parts) for k in range(parts + 1)]
    return [
        Segment(k, a, b, max(0, a - run_in), min(frames, b + look_ahead))
        for k, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def own_frames(batch: FrameBatch, seg: Segment) -> FrameBatch:
    """The frames of ``batch`` that ``seg`` writes (its run-in and run-out dropped)."""
    keep = (batch.indices >= seg.start) & (batch.indices < seg.end)
    if keep.all():
        return batch
    idx = np.flatnonzero(keep)
    cuts = None if batch.cuts is None else batch.cuts[idx]
    return FrameBatch(
        batch.video_id,
        batch.indices[idx],
        batch.pts[idx],
        batch.frames[idx],
        [batch.faces[i] for i in idx],
        cuts,
    )


def run_segments(
    input_path: Path,
    output: Path,
    info: VideoInfo,
    table: FrameTable,
    segments: list[Segment],
    specs: list[StageSpec],
    cfg: dict,
    version: str,
    sink: Callable[[FrameBatch], None],
    pool: StagePool | None = None,
    stop_pool_on_error: bool = False,
) -> None:
    """Run ``segments`` of ``input_path`` and join them into ``output`` (temporary name, renamed when
    complete; nothing is left on any error). ``sink`` sees every written batch, from several threads at
    once with ``executor=ray`` (each segment's batches in order, segments in any order).

    With ``executor=ray`` the segments share ``pool`` (required); when one segment fails or the run is
    interrupted and the caller allows it (``stop_pool_on_error``: the pool serves this video alone), the
    pool is closed so the other segments stop at once. A segment whose stage actor died runs again, at
    most ``ray.video_retries`` times.
    """
    from stages.encode import VideoWriter, join_segments

    work = output.with_name(f".{output.stem}.segments-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    work.mkdir()
    ray = cfg["executor"] == "ray"
    if ray and pool is None:
        raise ValueError("executor=ray: run_segments needs the StagePool its segments share")
    retries = int(cfg["ray"]["video_retries"]) if ray else 0
    files = [work / f"segment-{s.number:04d}.mp4" for s in segments]

    def attempt(seg: Segment) -> None:
        writer = VideoWriter(files[seg.number], info, cfg, version, audio=False)
        executor = None
        try:
            executor = make_executor(cfg["executor"], specs, cfg, pool=pool)
            batches = read_range(
                input_path, int(cfg["batch_size"]), seg.first, seg.last, table, video_id=str(input_path)
            )

            def write(batch: FrameBatch) -> None:
                mine = own_frames(batch, seg)
                if len(mine):
                    writer.write(mine)
                    sink(mine)

            executor.run(batches, write, first_index=seg.first)
            writer.close()
        except BaseException:  # Ctrl-C too: the segment's file goes
            writer.abort()
            raise
        finally:
            if executor is not None:
                executor.close()

    def run_one(seg: Segment) -> None:
        what = f"{input_path} segment {seg.number + 1}/{len(segments)}"
        rerun_after_actor_death(lambda: attempt(seg), retries, pool, what)

    try:
        if ray:
            with ThreadPoolExecutor(max(1, int(cfg["ray"]["concurrent_videos"]))) as threads:
                futures = [threads.submit(run_one, s) for s in segments]
                try:
                    for f in futures:
                        f.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    if stop_pool_on_error:
                        pool.close()  # the segments still running fail at once instead of finishing
                    raise
        else:
            for seg in segments:
                run_one(seg)
        join_segments(files, info, output, version)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class FrameDigest:
    """sha256 over the frames of a video in frame order, fed in any order: the sha256 of the concatenated
    sha256 of each ``(H, W, 3) uint8`` frame. Thread-safe."""

    def __init__(self) -> None:
        self._frames: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def update(self, batch: FrameBatch) -> None:
        digests = {
            int(i): hashlib.sha256(np.ascontiguousarray(f).tobytes()).digest()
            for i, f in zip(batch.indices, batch.frames)
        }
        with self._lock:
            self._frames.update(digests)

    def hexdigest(self) -> str:
        with self._lock:
            return hashlib.sha256(b"".join(self._frames[i] for i in sorted(self._frames))).hexdigest()
