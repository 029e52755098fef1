"""The command line's supervising parent: a run that dies without a word still ends in one line.

``python -m pipeline`` forks before any heavy import. The child runs the command; the parent only waits
for it, passes its exit code on, and forwards the signals a user sends to the parent's process id
(``kill -INT``, ``kill -TERM``, ``kill -HUP``). A signal the terminal sends (Ctrl-C) reaches the whole
foreground process group, so the child already has it and it is not sent twice.

Why a parent: some deaths cannot be caught inside the process. Ray's core worker ends its process with
``_exit(1)`` when the node's raylet or the cluster's GCS goes away (the plasma store connection fails, or
the GCS stays unreachable for ``ray.gcs_reconnect_seconds``); the kernel's OOM killer and ``kill -9`` send
SIGKILL. In those cases the child prints nothing of its own; the parent then prints one line
(``swapstream: error: ...``) naming what happened, removes the partial outputs the child left in the
folders it announced (:func:`announce`), and exits non-zero: 1 when Ray went away, ``128 + signal`` when
the child was killed by a signal (137 for SIGKILL), the child's own code otherwise.

The child tells the parent what it is doing over a pipe, one line per message (:func:`announce`):
``folder PATH`` (outputs are written there), ``ray [LOGS]`` (a Ray driver is starting; then started,
with the folder of its logs), ``interrupt TEXT`` (what is kept when the run stops: the command's
own words), ``reported CODE`` (the child printed its final line and will exit with CODE: a death after
that, such as Ray's exit while it shuts down, changes neither the line nor the code). A message is sent
once; the parent reads them as they come (every half second), so a long batch never fills the pipe.
Without a supervising parent (tests, ``main()`` called from Python, a platform without ``fork``)
:func:`announce` does nothing.

On Linux the parent is a child subreaper: what the dead child leaves running (an embedded Ray's agents)
comes to the parent, which stops it. The child gets SIGTERM if the parent dies (``kill -9`` of the
parent stops the run rather than leave it running unsupervised).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

# The write end of the pipe to the parent, in the child only; never inherited (os.pipe is close-on-exec,
# and Ray's workers import this module afresh, so they see None).
_report_fd: int | None = None
_sent: set[tuple[str, str]] = set()

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36  # prctl options (linux/prctl.h)
SI_KERNEL = 0x80  # siginfo.si_code of a signal the kernel sent (the terminal's Ctrl-C, hang-up)


def announce(kind: str, value: str = "") -> None:
    """Tell the supervising parent ``kind value`` (one line; see the module docstring); no-op without one."""
    if _report_fd is None or (kind, value) in _sent:
        return
    _sent.add((kind, value))
    text = f"{kind} {value}".replace("\n", " ").strip() + "\n"
    try:
        os.write(_report_fd, text.encode("utf-8", "replace"))
    except OSError:  # the parent is gone: nobody to tell
        pass


def run_supervised(main: Callable[[], int]) -> int:
    """Run ``main`` in a forked child and return the exit code the command should end with (see the module
    docstring). Without ``os.fork`` (or ``SWAPSTREAM_NO_SUPERVISOR=1``) ``main`` runs in this process."""
    if not hasattr(os, "fork") or os.environ.get("SWAPSTREAM_NO_SUPERVISOR") == "1":
        return main()
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    watched = {*FORWARDED, signal.SIGCHLD}
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would reap the child unseen
    # Blocked before the fork so that no signal falls between the fork and the wait loop; the child
    # unblocks them at once.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        global _report_fd
        os.close(read_fd)
        _report_fd = write_fd
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before that took effect
            os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        return main()
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    messages: list[tuple[str, str]] = []
    status = _wait_forwarding(pid, read_fd, messages)
    messages += _drain(read_fd)
    os.close(read_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child is done: a late Ctrl-C changes nothing
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    return _conclude(status, messages)


def _wait_forwarding(pid: int, read_fd: int, messages: list[tuple[str, str]]) -> int:
    """Wait for the child ``pid``, forwarding signals sent to this process alone and collecting its
    messages from ``read_fd`` into ``messages``; its wait status."""
    while True:
        info = signal.sigtimedwait({*FORWARDED, signal.SIGCHLD}, 0.5)
        if info is None:  # nothing happened: read what the child said meanwhile
            messages += _drain(read_fd)
            continue
        if info.si_signo != signal.SIGCHLD:
            if info.si_code != SI_KERNEL:  # sent by a process to us; the terminal's went to the child too
                try:
                    os.kill(pid, info.si_signo)
                except ProcessLookupError:
                    pass
            continue
        status = None
        while True:  # reap every child that ended: orphans of the child come to us (a subreaper) too
            try:
                done, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
            if done == pid:
                status = code
        if status is not None:
            return status


def _drain(fd: int) -> list[tuple[str, str]]:
    """The child's messages waiting in the (non-blocking) pipe, ``(kind, value)`` in order. Reads only
    what is there: a grandchild the child forked (a data loader) may still hold the pipe open. A message
    is one short ``os.write`` (atomic in a pipe), so what is read ends at a line's end."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        kind, _, value = line.partition(" ")
        out.append((kind, value))
    return out


def _conclude(status: int, messages: list[tuple[str, str]]) -> int:
    """The exit code for the child's wait ``status``; prints one line when the child could not."""
    reported = [int(value) for kind, value in messages if kind == "reported" and value.isdigit()]
    exited = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if exited == (reported[-1] if reported else 0):
        return exited
    _stop_orphans()  # the child died: what it started and what it was writing go too
    removed = _remove_partials([value for kind, value in messages if kind == "folder"])
    if reported:  # its line was out: the death came while it shut down
        return reported[-1]
    kept = next((value for kind, value in reversed(messages) if kind == "interrupt"), "")
    after = kept or ("partial output removed" if removed else "no output written")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        hint = " (out of memory, or kill -9)" if sig == signal.SIGKILL else ""
        print(f"swapstream: error: the run was killed by {name}{hint}; {after}", file=sys.stderr)
        return 128 + sig
    code = exited or 0
    sessions = [value for kind, value in messages if kind == "ray"]
    if sessions:
        from pipeline.ray_session import RAY_LOGS_UNKNOWN

        logs = next((value for value in reversed(sessions) if value), RAY_LOGS_UNKNOWN)
        print(
            "swapstream: error: Ray went away under the run (a node's raylet or the cluster's GCS stopped); "
            f"{after}; Ray's logs: {logs}",
            file=sys.stderr,
        )
        return 1
    print(f"swapstream: error: the run ended without a word (exit {code}); {after}", file=sys.stderr)
    return code or 1


def _prctl(option: int, value: int) -> None:
    """Linux ``prctl(option, value)``; nothing elsewhere (orphans then go to init, as usual)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, int(value), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stop_orphans() -> int:
    """Stop the processes the dead child left behind (our children now: a subreaper's); how many."""
    if not os.path.isdir("/proc"):
        return 0
    from pipeline.cluster import processes, stop_processes

    me = os.getpid()
    return stop_processes([pid for pid, (parent, _) in processes().items() if parent == me], grace=5.0)


def _remove_partials(folders: list[str]) -> int:
    """Remove the partial outputs of processes that are gone in the announced folders; how many went."""
    if not folders:
        return 0
    from stages.encode import remove_stale_partials

    return sum(len(remove_stale_partials(folder)) for folder in dict.fromkeys(folders))
