"""Test media made with ffmpeg-python (over imageio-ffmpeg's ffmpeg): cuts, re-encodes, odd forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

X264_FAST = {"vcodec": "libx264", "preset": "ultrafast"}


def run_ffmpeg(stream: Any, capture_stdout: bool = False) -> bytes:
    """Run an ffmpeg-python graph (``ffmpeg.output(...)``), replacing its output file; returns stdout when
    ``capture_stdout``. A failing ffmpeg raises RuntimeError with the end of its stderr."""
    import ffmpeg
    import imageio_ffmpeg

    try:
        out, _ = ffmpeg.run(
            stream,
            cmd=imageio_ffmpeg.get_ffmpeg_exe(),
            overwrite_output=True,
            capture_stdout=capture_stdout,
            capture_stderr=True,
        )
    except ffmpeg.Error as exc:
        tail = exc.stderr.decode(errors="replace").strip()[-600:]
        raise RuntimeError(f"ffmpeg failed: {' '.join(ffmpeg.compile(stream))}\n{tail}") from None
    return out or b""


def cut_360p(source: Path, dest: Path, seconds: float, crf: int | None = None) -> None:
    """The first ``seconds`` of ``source`` re-encoded to 360 px high (libx264 ultrafast, AAC) into ``dest``.
    ``crf``: libx264's default (23) when None."""
    import ffmpeg

    options: dict[str, Any] = {"t": f"{seconds:g}", "vf": "scale=-2:360", **X264_FAST, "acodec": "aac"}
    if crf is not None:
        options["crf"] = crf
    run_ffmpeg(ffmpeg.input(str(source)).output(str(dest), **options))


def stream_copy(
    source: Path, dest: Path, seconds: float, start: float | None = None, **input_options: Any
) -> Path:
    """``seconds`` of ``source`` (from ``start`` when given), video and audio stream-copied into ``dest``;
    ``input_options``: more input options (e.g. ``display_rotation=90``)."""
    import ffmpeg

    if start is not None:
        input_options["ss"] = f"{start:g}"
    run_ffmpeg(ffmpeg.input(str(source), **input_options).output(str(dest), t=f"{seconds:g}", c="copy"))
    return dest
