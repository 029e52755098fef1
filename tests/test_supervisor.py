"""The command line's supervising parent (pipeline/supervisor.py): a run that dies without a word (Ray's
``_exit``, SIGKILL) still ends in one line, leaves no partial file and no stray process; signals sent to
the parent reach the run. Then the real cases: a swap whose embedded Ray loses its raylet or its GCS, and
one whose cluster is stopped under it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cluster import cluster_processes, processes, stop
from tests.conftest import swap_command
from tests.test_cluster import free_port, start_head

REPO = Path(__file__).resolve().parents[1]

# A child body for run_supervised; FOLDER is a temporary folder, MODE says how the child ends.
CHILD = """
import os, signal, subprocess, sys, time
from pipeline import supervisor

folder, mode = sys.argv[1], sys.argv[2]

def body():
    supervisor.announce("folder", folder)
    partial = os.path.join(folder, f".out.partial-{os.getpid()}@{os.uname().nodename}.mp4")
    open(partial, "wb").write(b"half a video")
    if mode == "returns":
        os.unlink(partial)
        print("done", flush=True)
        supervisor.announce("reported", "3")  # as pipeline/__main__ does once its line is out
        return 3
    if mode == "exit":  # what Ray's QuickExit does
        os._exit(1)
    if mode == "ray":
        supervisor.announce("ray", "/tmp/ray/session_x/logs")
        os._exit(1)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "reported":  # the final line is out; a death while shutting down keeps its code
        print("swapstream: the summary", flush=True)
        supervisor.announce("reported", "0")
        os._exit(1)
    if mode == "orphan":  # leaves a process behind, as an embedded Ray's agent would
        proc = subprocess.Popen(["sleep", "60"])
        print(proc.pid, flush=True)
        os._exit(1)
    if mode == "chatty":  # more than a pipe holds (64 kB): the parent must read as it goes
        for k in range(5000):
            supervisor.announce("folder", folder + "/" + "x" * 40 + str(k))
        os.unlink(partial)
        supervisor.announce("reported", "0")
        return 0
    if mode == "sigint":
        try:
            print("waiting", flush=True)
            time.sleep(30)
        except KeyboardInterrupt:
            os.unlink(partial)
            print("swapstream: interrupted; no output written", file=sys.stderr, flush=True)
            supervisor.announce("reported", "130")
            return 130
        return 0

sys.exit(supervisor.run_supervised(body))
"""


def supervised(tmp_path: Path, mode: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SWAPSTREAM_NO_SUPERVISOR", None)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, list[str]]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "mode, code, says",
    [
        ("returns", 3, None),
        ("exit", 1, "swapstream: error: the run ended without a word (exit 1); partial output removed"),
        ("ray", 1, "swapstream: error: Ray went away under the run"),
        ("sigkill", 137, "swapstream: error: the run was killed by SIGKILL (out of memory, or kill -9)"),
        ("reported", 0, None),
    ],
)
def test_a_child_that_dies_without_a_word_ends_in_one_line(tmp_path, mode, code, says):
    rc, _out, lines = finish(supervised(tmp_path, mode))
    assert rc == code, lines
    if says is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith(says), lines
    assert "Traceback" not in "\n".join(lines)
    assert not list(tmp_path.glob(".*partial*")), "the dead child's partial output was left"
    if mode == "ray":
        assert "Ray's logs: /tmp/ray/session_x/logs" in lines[0]


def test_a_chatty_child_never_fills_the_pipe(tmp_path):
    proc = supervised(tmp_path, "chatty")
    rc, _, lines = finish(proc)
    assert rc == 0 and lines == [], lines


def test_the_run_stops_when_the_parent_is_killed(tmp_path):
    proc = supervised(tmp_path, "sigint")
    assert proc.stdout.readline().strip() == "waiting"
    child = next(pid for pid, (parent, _) in processes().items() if parent == proc.pid)
    proc.kill()
    proc.wait(timeout=10)
    assert _wait_for(lambda: _state(child) in ("", "Z"), 10), "the run kept going without its parent"


def test_processes_the_child_leaves_behind_are_stopped(tmp_path):
    proc = supervised(tmp_path, "orphan")
    rc, out, lines = finish(proc)
    orphan = int(out.split()[0])
    assert rc == 1 and len(lines) == 1, lines
    assert not Path(f"/proc/{orphan}").exists() or _state(orphan) == "Z", "the orphan still runs"


def test_a_signal_sent_to_the_parent_reaches_the_run(tmp_path):
    proc = supervised(tmp_path, "sigint")
    assert proc.stdout.readline().strip() == "waiting"
    proc.send_signal(signal.SIGINT)  # to the parent's pid only, as `kill -INT` would
    rc, _, lines = finish(proc)
    assert rc == 130 and lines == ["swapstream: interrupted; no output written"], "\n".join(lines)
    assert not list(tmp_path.glob(".*partial*"))


def test_sigterm_to_the_parent_stops_the_run_and_says_so(tmp_path):
    proc = supervised(tmp_path, "sigint")
    assert proc.stdout.readline().strip() == "waiting"
    proc.send_signal(signal.SIGTERM)
    rc, _, lines = finish(proc)
    assert rc == 128 + signal.SIGTERM, lines
    assert lines == ["swapstream: error: the run was killed by SIGTERM; partial output removed"], lines
    assert not list(tmp_path.glob(".*partial*"))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


# ------------------------------------------------------------------------------ real Ray going away


def _descendants(root: int) -> dict[int, list[str]]:
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


def _wait_for(what, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return False


def _swap(data_dir: Path, output: Path, env: dict, *overrides: str) -> subprocess.Popen:
    video, photo = data_dir / "videos" / "liveportrait_d10.mp4", data_dir / "faces" / "biden_a.jpg"
    cmd = swap_command(
        video, photo, output, "--quiet", "executor=ray", "ray.gcs_reconnect_seconds=3", *overrides
    )
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _titled(pids: dict[int, list[str]], text: str) -> list[int]:
    """Processes whose command line (a Ray worker's is its title, ``ray::_PoolActor``) holds ``text``."""
    return [pid for pid, args in pids.items() if text in " ".join(args)]


def _cluster_actors(port: int) -> list[int]:
    table = processes()
    return _titled({p: table[p][1] for p in cluster_processes(port) if p in table}, "_PoolActor")


def _named(pids: dict[int, list[str]], name: str) -> list[int]:
    return [pid for pid, args in pids.items() if args and os.path.basename(args[0]) == name]


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["raylet", "gcs_server"])
def test_a_swap_whose_embedded_ray_dies_ends_in_one_line(data_dir, tmp_path, victim):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    output = tmp_path / "out.mp4"
    proc = _swap(data_dir, output, env)
    try:
        assert _wait_for(lambda: _named(_descendants(proc.pid), victim), 120), "Ray did not start"
        assert _wait_for(lambda: _titled(_descendants(proc.pid), "_PoolActor"), 120), "no stage actor"
        time.sleep(3)  # the stage actors are at work
        assert proc.poll() is None, "the run ended before Ray could be stopped under it"
        ours = _descendants(proc.pid)
        for pid in _named(ours, victim):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _out, err = proc.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.startswith("swapstream:")]
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("swapstream: error:") and "Ray" in lines[0], err
    assert took < 60, f"took {took:.0f} s to end after the {victim} died"  # Ray's own wait is 60 s
    assert not output.exists() and not list(tmp_path.glob(".*partial*"))
    time.sleep(1)
    left = [pid for pid in ours if _state(pid) not in ("", "Z")]
    assert not left, f"processes of the dead run still run: {left}"


@pytest.mark.slow
def test_a_swap_whose_cluster_is_stopped_ends_in_one_line(data_dir, tmp_path):
    port = free_port()
    env = start_head(port, num_cpus=2)
    output = tmp_path / "out.mp4"
    proc = None
    try:
        proc = _swap(data_dir, output, {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"})
        assert _wait_for(lambda: _cluster_actors(port), 120), "no stage actor on the cluster"
        time.sleep(3)  # frames flowing
        assert proc.poll() is None, proc.communicate()[1]
        stop(port)  # what `make cluster-down` does
        stopped = time.monotonic()
        _out, err = proc.communicate(timeout=120)
        took = time.monotonic() - stopped
    finally:
        if proc is not None:
            proc.kill()
        stop(port)
    lines = [line for line in err.splitlines() if line.startswith("swapstream:")]
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("swapstream: error:") and "Ray" in lines[0], err
    assert took < 60, f"took {took:.0f} s to end after the cluster stopped"
    assert not output.exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
@pytest.mark.parametrize("keep", [False, True])
def test_an_embedded_rays_session_folder_goes_after_a_normal_end(keep, monkeypatch):
    from pipeline.ray_session import init_ray, ray_session_dir, shutdown_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_ray(num_cpus=1)
    folder = ray_session_dir()
    assert folder and Path(folder).is_dir()
    shutdown_ray(keep_session=keep)
    assert Path(folder).is_dir() == keep
    latest = Path(folder).parent / "session_latest"
    assert keep or not (latest.is_symlink() and latest.resolve() == Path(folder).resolve())
