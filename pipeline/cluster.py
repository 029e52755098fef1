"""``make cluster-up`` / ``make cluster-down``: one Ray head on this machine, and stopping exactly that one.

    python -m pipeline.cluster down --port 6379

``ray stop`` stops every Ray process of the user on the machine, including the Ray another job started
inside its own process (a swap with ``executor=ray`` and no ``RAY_ADDRESS``), which then dies mid-run.
``cluster-up`` therefore starts its head with its own temporary folder, :func:`temp_dir` (port), and
``down`` stops only the processes of that cluster: those whose command line names that folder or the
head's address, and all their descendants (workers, agents, the dashboard's helpers). SIGTERM first,
SIGKILL for what is left after a grace period.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

GRACE_SECONDS = 10.0


def temp_dir(port: int) -> Path:
    """The cluster's Ray temporary folder (short: Ray's socket paths must stay under 108 bytes)."""
    return Path(tempfile.gettempdir()) / f"ray-swapstream-{port}"


def processes() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, command line) of every process we can read (Linux ``/proc``)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the parenthesised name
        table[int(entry.name)] = (parent, [a.decode(errors="replace") for a in args if a])
    return table


def cluster_processes(port: int) -> list[int]:
    """Process ids of the cluster ``cluster-up`` started on ``port``: those whose command line names its
    temp folder, its client server, and all their descendants (workers, agents, dashboard helpers)."""
    folder = str(temp_dir(port))
    table = processes()
    roots = []
    for pid, (_, args) in table.items():
        names_folder = any(folder in arg for arg in args)
        client_server = "ray.util.client.server" in args and any(
            a.startswith("--address=") and a.endswith(f":{port}") for a in args
        )
        if (names_folder or client_server) and pid != os.getpid():
            roots.append(pid)
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def stop(port: int) -> int:
    """Stop the cluster's processes (SIGTERM, then SIGKILL after GRACE_SECONDS); returns how many."""
    return stop_processes(cluster_processes(port))


def stop_processes(pids: list[int], grace: float = GRACE_SECONDS) -> int:
    """SIGTERM to each of ``pids``, SIGKILL to those still running ``grace`` seconds later; how many."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _running(pid):
            _signal(pid, signal.SIGKILL)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (reaps it when it is our own child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("down", "stop the cluster cluster-up started"), ("temp-dir", "print its folder")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--port", type=int, default=6379, help="the head's port (RAY_PORT)")
    args = parser.parse_args(argv)
    if args.command == "temp-dir":
        print(temp_dir(args.port))
        return 0
    count = stop(args.port)
    if count:
        print(f"swapstream: stopped the cluster-up Ray on port {args.port} ({count} processes)")
    else:
        print(f"swapstream: no Ray cluster of cluster-up on port {args.port} is running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
