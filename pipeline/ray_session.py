"""Ray itself for the executors and tools: start or join it, tell whether it stopped, shut it down.

The one place that reaches into Ray's private node object (:func:`_ray_node`: its processes, session
folder and GCS address). :mod:`pipeline.executors` runs stages on it; :mod:`pipeline.supervisor` names its
logs when a run dies with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from typing import Any


def ray_module():
    """The ``ray`` package, imported when first needed (importing it costs about a second)."""
    import ray

    return ray


_INIT_LOCK = threading.Lock()


def init_ray(num_cpus: int | None = None, gcs_reconnect_seconds: float | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` when set; otherwise start an embedded local instance (no dashboard).

    The embedded instance is always a new one (``address="local"``), never a cluster that ``ray start``
    left running on this machine. A loopback ``RAY_ADDRESS`` keeps Ray on loopback (Ray would otherwise
    swap 127.0.0.1 for the machine's routable address). Thread-safe.

    gcs_reconnect_seconds (``ray.gcs_reconnect_seconds``): how long this driver, and an embedded
    instance's processes, wait for an unreachable GCS before they exit (Ray's
    ``gcs_rpc_server_reconnect_timeout_s``; the environment variable, when set, wins). The session folder
    is announced to a supervising parent (:mod:`pipeline.supervisor`), which names it if Ray goes away.
    """
    ray = ray_module()
    with _INIT_LOCK:
        if ray.is_initialized():
            return
        from pipeline.supervisor import announce

        announce("ray")  # from here on, a death without a word is Ray's (its start can fail that way too)
        if gcs_reconnect_seconds is not None:  # read by Ray's C++ config when its processes start
            seconds = str(max(1, round(gcs_reconnect_seconds)))
            os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", seconds)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        runtime_env = {"env_vars": {"PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}}
        address = os.environ.get("RAY_ADDRESS")
        if address:
            if address.split(":")[0] in ("127.0.0.1", "localhost"):
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(runtime_env=runtime_env, log_to_driver=True)
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(
                address="local",
                num_cpus=num_cpus or os.cpu_count(),
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=True,
                configure_logging=False,
            )
        announce("ray", ray_logs())


STOP_GRACE_SECONDS = 3.0  # an actor died: how long to watch whether its whole node or cluster goes too


def ray_stopped(within: float = 0.0) -> str | None:
    """What of the Ray this driver uses has stopped, or None while it seems to run: a process of the
    instance it started (``"raylet (exit -9)"``; a connected cluster's are not its children), or the
    cluster's GCS, which no longer accepts connections (``"GCS at 127.0.0.1:6379"``). A stage actor's
    death is then the node's or the cluster's: nothing can run again. ``within``: keep looking for that
    long (a cluster being stopped loses its actors a moment before its GCS)."""
    deadline = time.monotonic() + within
    while True:
        stopped = _ray_stopped_now()
        if stopped or time.monotonic() >= deadline:
            return stopped
        time.sleep(0.25)


def _ray_node() -> Any:
    """This driver's Ray node object (Ray's private API: processes, session folder, GCS address), or
    None when Ray is not running here or the API moved. The one place that reaches into it."""
    try:
        return ray_module()._private.worker.global_worker.node
    except Exception:
        return None


def _ray_stopped_now() -> str | None:
    node = _ray_node()
    if node is None:
        return None
    try:
        from ray._private import ray_constants

        for kind in (ray_constants.PROCESS_TYPE_RAYLET, ray_constants.PROCESS_TYPE_GCS_SERVER):
            for info in node.all_processes.get(kind, []):
                code = info.process.poll()
                if code is not None:
                    return f"{kind} (exit {code})"
        host, _, port = node.gcs_address.rpartition(":")
    except Exception:  # a private API, or no instance: nothing known to have stopped
        return None
    try:
        socket.create_connection((host, int(port)), timeout=2.0).close()
    except OSError:
        return f"GCS at {host}:{port}"
    return None


def shutdown_ray(keep_session: bool = True) -> None:
    """Shut down this process's Ray, if it runs. An instance this process started (not a cluster it
    connected to) leaves its session folder (about 200 kB of logs) under the temporary folder; with
    ``keep_session=False`` it is removed, with the ``session_latest`` link when that names it (the command
    line keeps it only after an unexpected error, whose logs may explain it)."""
    ray = ray_module()
    if not ray.is_initialized():
        return
    folder = ray_session_dir()
    embedded = bool(getattr(_ray_node(), "all_processes", None))  # unknown: the folder is left in place
    try:
        ray.shutdown()
    except Exception:  # shutting down a Ray that already failed: nothing more to report
        pass
    if keep_session or not embedded or not folder:
        return
    shutil.rmtree(folder, ignore_errors=True)
    latest = os.path.join(os.path.dirname(folder), "session_latest")
    with contextlib.suppress(OSError):
        if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(folder):
            os.unlink(latest)


def ray_session_dir() -> str | None:
    """This driver's Ray session folder (logs under ``logs/``), or None when Ray is not running here."""
    try:
        return _ray_node().get_session_dir_path()
    except Exception:  # a private API: its absence only costs the folder's name in a message
        return None


RAY_LOGS_UNKNOWN = "Ray's session folder"


def ray_logs() -> str:
    """Where this driver's Ray writes its logs, for messages."""
    folder = ray_session_dir()
    return os.path.join(folder, "logs") if folder else RAY_LOGS_UNKNOWN


class RayStopped(RuntimeError):
    """The Ray instance a run uses stopped (its raylet or GCS exited): the run cannot go on."""
