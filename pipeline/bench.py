"""``make bench``: frames/s of the swap pipeline against a plain decode + re-encode of the same clip.

    python -m pipeline.bench [--input CLIP] [--source FACE] [--executors local,ray] [--segments N]
                             [key=value ...]

All figures come from one run on one machine; compare the ratios, not the absolute numbers. Ray itself
is started before its run is timed (on a cluster it is already running); building the stage actors and
loading their models is timed, as building the stages is for the in-process run ("cold"); the "warm" row
runs the clip again on the same actors, as every video after the first of a batch does; the "segments"
row runs it once more on those actors split into ``--segments`` parts at once (``segments.parts``; each
part also processes its run-in and run-out, which a short clip pays for in full).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pipeline
from pipeline.config import load_config, with_overrides
from pipeline.executors import StagePool
from pipeline.ray_session import init_ray
from pipeline.run import swap_video
from stages.decode import probe, read_batches
from stages.encode import VideoWriter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def transcode_fps(clip: Path, out: Path, cfg: dict) -> tuple[int, float]:
    """Decode and re-encode ``clip`` with the pipeline's own reader and writer: the speed limit."""
    started = time.perf_counter()
    writer = VideoWriter(out, probe(clip), cfg, pipeline.__version__)
    n = 0
    for batch in read_batches(clip, int(cfg["batch_size"])):
        writer.write(batch)
        n += len(batch)
    writer.close()
    return n, n / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench")
    parser.add_argument("--input", type=Path, default=DATA / "videos" / "liveportrait_d20.mp4")
    parser.add_argument("--source", type=Path, default=DATA / "faces" / "obama_a.jpg")
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--segments", type=int, default=2, help="parts of the segmented Ray row (0: skip)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, args.overrides)
        frames, fps = transcode_fps(args.input, Path(tmp) / "transcode.mp4", cfg)
        rows.append(("decode + re-encode", frames, frames / fps, fps))
        for kind in args.executors.split(","):
            cfg = load_config(None, [*args.overrides, f"executor={kind}"])
            if kind != "ray":
                summary = swap_video(args.input, args.source, Path(tmp) / f"{kind}.mp4", cfg, progress=False)
                rows.append((f"swap, executor={kind}", summary.frames, summary.seconds, summary.fps))
                continue
            init_ray(gcs_reconnect_seconds=cfg["ray"]["gcs_reconnect_seconds"])
            pool = StagePool.from_config(cfg)
            try:
                for when in ("cold", "warm"):
                    out = Path(tmp) / f"ray-{when}.mp4"
                    summary = swap_video(args.input, args.source, out, cfg, progress=False, pool=pool)
                    rows.append((f"swap, executor=ray, {when}", summary.frames, summary.seconds, summary.fps))
                if args.segments > 1:
                    seg_cfg = with_overrides(cfg, [f"segments.parts={args.segments}"])
                    out = Path(tmp) / "ray-segments.mp4"
                    summary = swap_video(args.input, args.source, out, seg_cfg, progress=False, pool=pool)
                    name = f"swap, ray, {args.segments} segments"
                    rows.append((name, summary.frames, summary.seconds, summary.fps))
            finally:
                pool.close()
    base = rows[0][3]
    local = next((rate for name, _, _, rate in rows if name == "swap, executor=local"), None)
    print(f"clip: {args.input.name}, source: {args.source.name}")
    header = f"{'run':<30}{'frames':>8}{'seconds':>10}{'frames/s':>10}{'x transcode':>13}"
    print(header + (f"{'x in-process':>14}" if local else ""))
    for name, n, secs, rate in rows:
        line = f"{name:<30}{n:>8}{secs:>10.1f}{rate:>10.1f}{rate / base:>13.2f}"
        print(line + (f"{rate / local:>14.2f}" if local and name.startswith("swap") else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
