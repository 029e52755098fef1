"""``make bench``: the swap's speed and peak memory against a plain decode + re-encode, from one run.

    python -m pipeline.bench [--clips d12,loop30] [--source FACE] [key=value ...]

For each clip (``d12``: ``liveportrait_d12.mp4``, 7 s at 512²; ``loop30``: ``liveportrait_d20.mp4``
looped to 30 s, stream-copied into a temporary folder) the rows are, each in a process of its own:

- ``transcode``: the pipeline's own reader and writer, decode + re-encode, nothing else (the ceiling);
- ``default``: the README's command, ``python -m pipeline swap`` with the default config;
- ``in-process``: the same with ``executor=local``;
- ``ray cold``: the same with ``executor=ray`` (Ray started by the command);
- ``ray warm``: a second video on the same stage actors, as every video after the first of a batch runs.

``seconds`` is the wall time a user waits for the swap rows (start-up, imports and model loading included);
for ``transcode`` only its decode + re-encode loop (no start-up: the strict ceiling, as the speed issue
measured it), for ``ray warm`` the second video's own run. ``x transcode`` = transcode seconds / row
seconds. ``peak MB``: the largest summed resident memory of the row's process tree (Ray's processes
included), sampled every 0.1 s. All figures come from one run on one machine: compare the ratios, not the
numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CLIPS = {"d12": "liveportrait_d12.mp4", "loop30": "liveportrait_d20.mp4"}
LOOP_SECONDS = 30.0


def looped_clip(source: Path, dest: Path, seconds: float) -> Path:
    """``source`` played again and again up to ``seconds``, stream-copied (video and audio) into ``dest``
    (ffmpeg-python over imageio-ffmpeg's ffmpeg)."""
    import ffmpeg
    import imageio_ffmpeg

    stream = ffmpeg.input(str(source), stream_loop=-1).output(str(dest), t=f"{seconds:g}", c="copy")
    ffmpeg.run(stream, cmd=imageio_ffmpeg.get_ffmpeg_exe(), overwrite_output=True, capture_stderr=True)
    return dest


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_rss_mb(pid: int) -> float:
    """Summed resident memory (MB) of process ``pid`` and all its descendants, from /proc (Linux)."""
    kids, todo, total = _children(), [pid], 0.0
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            continue
    return total


def run_row(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` (from the repository folder); returns (wall seconds, peak MB of its tree, its stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-400:]}")
    return seconds, peak[0], out


def _transcode(clip: Path, out: Path) -> None:
    """Child of the ``transcode`` row: decode and re-encode ``clip`` with the pipeline's reader and writer."""
    import pipeline
    from pipeline.config import load_config
    from stages.decode import probe, read_batches
    from stages.encode import VideoWriter

    cfg = load_config(None)
    started = time.perf_counter()
    writer = VideoWriter(out, probe(clip), cfg, pipeline.__version__)
    for batch in read_batches(clip, int(cfg["batch_size"])):
        writer.write(batch)
    writer.close()
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _ray_warm(clip: Path, source: Path, folder: Path, overrides: list[str]) -> None:
    """Child of the ``ray warm`` row: one video to warm the stage actors, then the timed second one."""
    from pipeline.config import load_config
    from pipeline.executors import StagePool
    from pipeline.ray_session import init_ray, shutdown_ray
    from pipeline.run import swap_video

    cfg = load_config(None, [*overrides, "executor=ray"])
    init_ray(gcs_reconnect_seconds=cfg["ray"]["gcs_reconnect_seconds"])
    pool = StagePool.from_config(cfg)
    try:
        swap_video(clip, source, folder / "warm-1.mp4", cfg, progress=False, pool=pool)
        summary = swap_video(clip, source, folder / "warm-2.mp4", cfg, progress=False, pool=pool)
    finally:
        pool.close()
        shutdown_ray(keep_session=False)
    print(json.dumps({"seconds": summary.seconds, "frames": summary.frames}))


def bench_clip(
    clip: Path, source: Path, folder: Path, overrides: list[str]
) -> list[tuple[str, float, float]]:
    """The rows of one clip: (name, seconds, peak MB)."""
    py = sys.executable
    swap = [py, "-m", "pipeline", "swap", "--input", str(clip), "--source", str(source), "--quiet"]
    rows = []
    _, peak, out = run_row([py, "-m", "pipeline.bench", "--child", "transcode", str(clip), str(folder)])
    rows.append(("transcode", _child_seconds(out), peak))
    for name, extra in (("default", []), ("in-process", ["executor=local"]), ("ray cold", ["executor=ray"])):
        out = folder / f"{name.replace(' ', '-')}.mp4"
        seconds, peak, _ = run_row([*swap, "--output", str(out), "--overwrite", *overrides, *extra])
        rows.append((name, seconds, peak))
    child = [
        py,
        "-m",
        "pipeline.bench",
        "--child",
        "ray-warm",
        str(clip),
        str(folder),
        str(source),
        *overrides,
    ]
    _, peak, out = run_row(child)
    rows.append(("ray warm", _child_seconds(out), peak))
    return rows


def _child_seconds(stdout: str) -> float:
    return float(json.loads(stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one row's own process
        kind, clip, folder, *rest = argv[1:]
        if kind == "transcode":
            _transcode(Path(clip), Path(folder) / "transcode.mp4")
        else:
            _ray_warm(Path(clip), Path(rest[0]), Path(folder), rest[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench")
    parser.add_argument("--clips", default="d12,loop30", help=f"comma-separated: {', '.join(CLIPS)}")
    parser.add_argument("--source", type=Path, default=DATA / "faces" / "obama_a.jpg")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every row")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="swapstream-bench-") as tmp:
        for name in args.clips.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            clip = DATA / "videos" / CLIPS[name]
            if name == "loop30":
                clip = looped_clip(clip, folder / "loop30.mp4", LOOP_SECONDS)
            rows = bench_clip(clip, args.source, folder, args.overrides)
            base = rows[0][1]
            print(f"clip: {name} ({clip.name}), source: {args.source.name}")
            print(f"{'row':<14}{'seconds':>9}{'x transcode':>13}{'peak MB':>9}")
            for row, seconds, peak in rows:
                print(f"{row:<14}{seconds:>9.1f}{base / seconds:>13.2f}{peak:>9.0f}")
            print(flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
