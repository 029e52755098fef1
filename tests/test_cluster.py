"""``make cluster-down`` stops the Ray head ``make cluster-up`` started and nothing else: another job's own
embedded Ray (a swap with ``executor=ray`` and no ``RAY_ADDRESS``) keeps running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cluster import cluster_processes, stop, temp_dir

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")

EMBEDDED = """
import sys, time, ray
ray.init(num_cpus=1, include_dashboard=False)
@ray.remote
def one():
    return 1
print("up", flush=True)
for line in sys.stdin:  # each line: run a task, answer
    print(ray.get(one.remote()), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(port: int, num_cpus: int) -> dict[str, str]:
    """Start a Ray head on loopback ``port`` in the temp folder ``cluster-up`` gives it, as ``make
    cluster-up`` does (no dashboard); the environment to run its clients and other Ray jobs with."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    head = [
        str(RAY),
        *("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={num_cpus}"),
        *("--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir(port)}"),
    ]
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
    return env


@pytest.mark.slow
def test_cluster_down_stops_only_its_own_head(tmp_path):
    port = free_port()
    env = start_head(port, num_cpus=1)
    embedded = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert embedded.stdout.readline().strip() == "up"
        assert cluster_processes(port), "the head's processes name its temp folder"
        assert stop(port) >= 2
        time.sleep(1)
        assert cluster_processes(port) == []
        with socket.socket() as s:  # the head's port is free again
            assert s.connect_ex(("127.0.0.1", port)) != 0
        assert embedded.poll() is None, "the other job's Ray was stopped too"
        embedded.stdin.write("go\n")
        embedded.stdin.flush()
        assert embedded.stdout.readline().strip() == "1"  # and it still runs tasks
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cluster", "down", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "no Ray cluster of cluster-up" in out.stdout
    finally:
        embedded.kill()
        stop(port)
