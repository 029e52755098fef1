"""Independent checks of a swapped video against its input (dlib's own detector and descriptor)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import av
import numpy as np


def load_photo(name: str) -> np.ndarray:
    """A shared test photo as ``(H, W, 3) uint8`` RGB, upright (the pipeline's own loader)."""
    import pytest

    from pipeline.run import load_image
    from tests.conftest import FACES

    path = FACES / name
    if not path.is_file():
        pytest.fail(f"test photo not found: {path} (the shared data folder sits next to the repository)")
    return load_image(path)


def decode_all(path: Path, every: int = 1) -> list[np.ndarray]:
    """Frames ``(H, W, 3) uint8`` RGB of a short clip, every ``every``-th one (display orientation)."""
    from stages.decode import read_batches

    out = []
    for batch in read_batches(path, 16):
        for i, frame in zip(batch.indices, batch.frames):
            if i % every == 0:
                out.append(frame)
    return out


def video_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def audio_packets(path: Path) -> list[tuple[int, int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(*c.streams.audio) if p.dts is not None]


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib
    import face_recognition_models as frm

    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(frm.pose_predictor_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


def face_descriptor(image: np.ndarray) -> np.ndarray | None:
    """dlib 128-d descriptor of the largest face (dlib's HOG detector), None if no face."""
    detector, predictor, recogniser = _dlib_models()
    rects = detector(image, 1)
    if not rects:
        return None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = predictor(image, rect)
    return np.asarray(recogniser.compute_face_descriptor(image, shape), dtype=np.float64)


def psnr_outside(original: np.ndarray, output: np.ndarray, boxes: list[np.ndarray], grow: float) -> float:
    """PSNR (dB) of the pixels outside every box grown by ``grow`` × its size on each side."""
    from pipeline.evaluation.integrity import mse_outside

    mse = mse_outside(original, output, boxes, grow)
    return float("inf") if not mse else 10 * np.log10(255.0**2 / mse)


def check_learned_swap(clip: Path, out: Path, summary, every: int = 4, grow: float = 0.25) -> None:
    """A learned backend's swap (or edit) of ``clip`` into ``out`` (its :class:`pipeline.run.Summary`):
    every frame swapped and kept with its timestamp, the audio packets and the synthetic tag kept, and on
    every ``every``-th frame the face changed while the background (outside MTCNN's boxes grown by
    ``grow`` of their size on each side) stays within 30 dB PSNR."""
    from pipeline.config import load_config
    from stages.detect import DetectStage

    n = len(video_times(clip))
    assert summary.frames == n and summary.faces_swapped == n
    assert video_times(out) == video_times(clip)
    assert audio_packets(out) == audio_packets(clip)
    with av.open(str(out)) as c:
        assert "swapstream" in c.metadata.get("synthetic", "")
    detector = DetectStage(load_config())
    for orig, new in zip(decode_all(clip, every), decode_all(out, every)):
        boxes = [f.box for f in detector.detect_image(orig)]
        assert boxes
        assert psnr_outside(orig, new, boxes, grow=grow) >= 30.0
        assert abs(orig.astype(int) - new.astype(int)).mean() > 0.5  # the face region did change


def check_backend_end_to_end(
    data_dir: Path, tmp_path: Path, backend: str, overrides: list[str], grow: float = 0.25
) -> None:
    """``swap.backend=<backend>`` from ``--config configs/<backend>.yaml`` plus ``overrides``: half a second
    of retalking_face_5 swapped with obama_a passes :func:`check_learned_swap` (``grow``); the same
    overrides without that config (so without the crop the networks were trained on) are refused with a
    ConfigError naming it."""
    import pytest

    from models.errors import ConfigError
    from pipeline.config import CONFIG_DIR, load_config
    from pipeline.run import swap_video
    from tests.media_making import stream_copy

    clip = stream_copy(data_dir / "videos" / "retalking_face_5.mp4", tmp_path / "clip.mp4", 0.5)
    source = data_dir / "faces" / "obama_a.jpg"
    out = tmp_path / "out.mp4"
    cfg = load_config(CONFIG_DIR / f"{backend}.yaml", overrides)
    summary = swap_video(clip, source, out, cfg, progress=False)
    check_learned_swap(clip, out, summary, grow=grow)
    with pytest.raises(ConfigError, match=f"configs/{backend}.yaml"):
        swap_video(
            clip,
            source,
            tmp_path / "o2.mp4",
            load_config(None, [f"swap.backend={backend}", *overrides]),
            progress=False,
        )
