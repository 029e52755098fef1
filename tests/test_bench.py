"""pipeline/bench.py's own parts: the looped 30 s clip and the process-tree memory it reports."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pipeline.bench import looped_clip, tree_rss_mb
from stages.decode import probe


def test_looped_clip_plays_the_source_again_up_to_the_length(data_dir, tmp_path):
    source = data_dir / "videos" / "liveportrait_d20.mp4"  # 7 s
    info = probe(looped_clip(source, tmp_path / "loop.mp4", 16.0))
    assert 15.5 <= info.duration <= 16.5 and info.audio_streams == 1
    assert (info.width, info.height) == (probe(source).width, probe(source).height)


def test_tree_memory_counts_the_children():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)",
        ]
    )
    try:
        alone = tree_rss_mb(child.pid)
        deadline = 0
        while alone < 150 and deadline < 50:  # until the child has touched its 200 MB
            time.sleep(0.1)
            alone, deadline = tree_rss_mb(child.pid), deadline + 1
        assert alone >= 150
        assert tree_rss_mb(os.getpid()) >= alone  # this process's tree holds the child
    finally:
        child.kill()
        child.wait()
