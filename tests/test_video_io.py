"""Decode and encode: display orientation, pts, audio copied byte for byte, synthetic tag, atomic output."""

from __future__ import annotations

from pathlib import Path

import av
import ffmpeg
import numpy as np
import pytest

from stages.decode import InputError, probe, read_batches
from stages.encode import SYNTHETIC_KEY, VideoWriter, keep_start_times, temporary_path
from tests.media_checks import audio_packets, video_times
from tests.media_making import run_ffmpeg, stream_copy


def transcode(src: Path, dst: Path, cfg: dict, batch_size: int = 16) -> int:
    info = probe(src)
    writer = VideoWriter(dst, info, cfg, "test")
    n = 0
    for batch in read_batches(src, batch_size):
        writer.write(batch)
        n += len(batch)
    writer.close()
    return n


@pytest.mark.parametrize(
    "name", ["liveportrait_d20.mp4", "hamilton_short_clip.mp4", "sadtalker_WDA_KatieHill_000.mp4"]
)
def test_transcode_keeps_frames_timestamps_audio_and_tags(name, data_dir, base_cfg, tmp_path):
    src = data_dir / "videos" / name
    out = tmp_path / "out.mp4"
    n = transcode(src, out, base_cfg)
    assert n == len(video_times(src))
    assert video_times(out) == video_times(src)
    a_in, a_out = audio_packets(src), audio_packets(out)
    assert len(a_in) == len(a_out) > 0
    assert a_in == a_out  # pts, dts and payload bytes identical
    with av.open(str(out)) as c:
        assert "swapstream" in c.metadata.get(SYNTHETIC_KEY, "")
        assert "synthetic" in c.metadata.get("comment", "")
    assert not temporary_path(out).exists()


def _remux_starting_at(src: Path, dst: Path, video_start: int, audio_start: int, seconds: float) -> None:
    """``src``'s first ``seconds`` copied packet for packet into MP4 ``dst`` with its video moved to start at
    ``video_start`` ticks and its audio at ``audio_start`` ticks: starts off the millisecond grid, as a
    cut from the middle of a video has them."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4") as o:
        vi, ai = i.streams.video[0], i.streams.audio[0]
        streams = {vi.index: o.add_stream_from_template(vi), ai.index: o.add_stream_from_template(ai)}
        streams[vi.index].time_base = vi.time_base
        keep_start_times(o)
        shift = {vi.index: video_start - vi.start_time, ai.index: audio_start - ai.start_time}
        for p in i.demux(vi, ai):
            if p.dts is None or float(p.dts * p.time_base) > seconds:
                continue
            d = shift[p.stream.index]
            p.pts, p.dts = p.pts + d, p.dts + d
            p.stream = streams[p.stream.index]
            o.mux(p)


def test_transcode_keeps_start_times_off_the_millisecond_grid(data_dir, base_cfg, tmp_path):
    # the quality grid's 3 s cut of hamilton starts its video at 10000/11988 s and its audio at
    # 35840/44100 s; MP4's default movie timescale (1000) wrote them back 0.17 ms and 31 samples early
    src = tmp_path / "cut.mp4"
    _remux_starting_at(data_dir / "videos" / "hamilton_short_clip.mp4", src, 10000, 35840, 1.5)
    with av.open(str(src)) as c:
        assert (c.streams.video[0].start_time, c.streams.audio[0].start_time) == (10000, 35840)
    out = tmp_path / "out.mp4"
    assert transcode(src, out, base_cfg) == len(video_times(src))
    with av.open(str(out)) as c:
        assert (c.streams.video[0].start_time, c.streams.audio[0].start_time) == (10000, 35840)
    assert video_times(out) == video_times(src)
    assert audio_packets(out) == audio_packets(src)


def test_batches_are_consecutive_and_bounded(data_dir):
    src = data_dir / "videos" / "liveportrait_d20.mp4"
    seen = 0
    for batch in read_batches(src, 16):
        assert len(batch) <= 16
        assert batch.frames.dtype == np.uint8 and batch.frames.shape[1:] == (480, 480, 3)
        assert batch.indices[0] == seen and np.all(np.diff(batch.indices) == 1)
        seen += len(batch)
    assert seen == 175


def test_rotation_metadata_is_applied(data_dir, tmp_path):
    """A phone-style clip (display matrix rotated 90°) decodes upright, as the ffmpeg CLI shows it."""
    src = data_dir / "videos" / "hamilton_short_clip.mp4"
    rotated = tmp_path / "rotated.mp4"
    stream_copy(src, rotated, 1, display_rotation=90)
    info = probe(rotated)
    assert (info.width, info.height) == (360, 640)
    first = next(read_batches(rotated, 4)).frames[0]
    assert first.shape == (640, 360, 3)
    # Reference: the ffmpeg CLI applies the display matrix itself.
    one_frame = ffmpeg.input(str(rotated)).output("pipe:", vframes=1, f="rawvideo", pix_fmt="rgb24")
    raw = run_ffmpeg(one_frame, capture_stdout=True)
    ref = np.frombuffer(raw, np.uint8).reshape(640, 360, 3)
    assert np.abs(first.astype(int) - ref.astype(int)).mean() < 3.0


def test_not_a_video_is_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    with pytest.raises(InputError, match=r"notes\.mp4"):
        probe(bogus)
    with pytest.raises(InputError, match="no such file"):
        probe(tmp_path / "missing.mp4")


def test_abort_leaves_no_file(data_dir, base_cfg, tmp_path):
    src = data_dir / "videos" / "liveportrait_d20.mp4"
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, probe(src), base_cfg, "test")
    writer.write(next(read_batches(src, 4)))
    assert temporary_path(out).exists() and not out.exists()
    writer.abort()
    assert not temporary_path(out).exists() and not out.exists()


def test_watermark_marks_frames(data_dir, base_cfg, tmp_path):
    cfg = {**base_cfg, "encode": {**base_cfg["encode"], "watermark": True}}
    src = data_dir / "videos" / "liveportrait_d20.mp4"
    out = tmp_path / "wm.mp4"
    writer = VideoWriter(out, probe(src), cfg, "test")
    batch = next(read_batches(src, 2))
    original = batch.frames.copy()
    writer.write(batch)
    writer.close()
    assert np.array_equal(batch.frames, original)  # the batch itself is not drawn on
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    corner = np.abs(frame[-40:, :150].astype(int) - original[0][-40:, :150].astype(int)).mean()
    assert corner > 10


def _video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def test_same_frames_encode_to_same_bytes(data_dir, base_cfg, tmp_path):
    """Three encodes of the same frames in one process give the same packets (``encode.deterministic``):
    with x264's AVX-512 code, 480-px-wide frames came out different run to run."""
    src = data_dir / "videos" / "liveportrait_d20.mp4"
    info = probe(src)
    assert info.width == 480  # a width at which the AVX-512 code misread (not a multiple of 64)
    batches = [b for b, _ in zip(read_batches(src, 8), range(8))]
    encodes = []
    for k in range(3):
        out = tmp_path / f"e{k}.mp4"
        writer = VideoWriter(out, info, base_cfg, "test", audio=False)
        for batch in batches:
            writer.write(batch)
        writer.close()
        encodes.append(_video_packets(out))
    assert len(encodes[0]) == 64
    assert encodes[1] == encodes[0] and encodes[2] == encodes[0]
