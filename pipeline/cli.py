"""The command line's one edge for every subcommand: errors in one line, exit codes, Ctrl-C, Ray shutdown.

What escapes a command becomes one line on stderr and an exit code, never a traceback (``--debug`` shows
it); Ctrl-C is one line and exit 130; the Ray a command started is shut down here, and a supervising parent
(:mod:`pipeline.supervisor`) is told when the final line is out."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from models.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


def guarded(
    action: Callable[[], str | int],
    on_interrupt: str,
    debug: bool = False,
    prog: str = "swapstream",
) -> int:
    """Run ``action``, a command's work, and end it the one way every command ends.

    ``action`` returns its summary line (printed on stdout, exit 0) or an exit code (it printed its own
    output). Whatever escapes becomes one line on stderr and no traceback: a problem with the user's
    input (a SwapstreamError, also when a Ray worker raised it) ``<prog>: error: ...``, exit 2; anything
    else the same with "(run with --debug for the details)", exit 1, and ``debug`` re-raises it with its
    traceback instead. Ctrl-C prints ``<prog>: interrupted; <on_interrupt>`` (what is kept), exit 130;
    once the output is complete a Ctrl-C is ignored."""
    from models.errors import one_line
    from pipeline.supervisor import announce

    announce("interrupt", on_interrupt)
    interrupted: list[float] = []
    finished: list[bool] = []

    def on_sigint(signum, frame):
        if finished:  # the output is complete: only printing and shutting down are left
            return
        if interrupted and time.monotonic() - interrupted[-1] < 1.0:
            return  # the same Ctrl-C twice (sent to the process group and to us): let the first unwind
        interrupted.append(time.monotonic())  # one that a library turns into another error still counts
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            result = action()
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; {on_interrupt}", file=sys.stderr)
            return end_command(EXIT_INTERRUPTED)
        except Exception as exc:
            if interrupted:
                print(f"{prog}: interrupted; {on_interrupt}", file=sys.stderr)
                return end_command(EXIT_INTERRUPTED)
            user = user_error(exc)
            if user is not None:
                print(f"{prog}: error: {one_line(user)}", file=sys.stderr)
                return end_command(EXIT_BAD_INPUT)
            if debug:
                raise
            print(f"{prog}: error: {one_line(exc)} (run with --debug for the details)", file=sys.stderr)
            return end_command(EXIT_FAILED)
        finished.append(True)
        if isinstance(result, int):
            return end_command(result)
        print(result, flush=True)
        return end_command(EXIT_OK)
    finally:
        signal.signal(signal.SIGINT, previous)


def end_command(code: int) -> int:
    """Shut down the Ray this process started, if any, before exiting with ``code``: here rather than in
    Ray's exit hook, where a Ctrl-C printed a traceback after the output was complete. A Ctrl-C during
    the shutdown exits at once with ``code`` (everything the run produced is already in place).

    The run's final line is printed by now: the supervising parent is told so first, and will not add a
    line of its own if Ray's shutdown ends this process (a cluster that went away: Ray exits after
    ``ray.gcs_reconnect_seconds``)."""
    from pipeline.supervisor import announce

    sys.stdout.flush()
    sys.stderr.flush()
    announce("reported", str(code))
    if "ray" not in sys.modules:
        return code
    from pipeline.ray_session import shutdown_ray

    previous = signal.signal(signal.SIGINT, lambda *_: os._exit(code))
    try:
        shutdown_ray(keep_session=code not in (EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED))
    finally:
        signal.signal(signal.SIGINT, previous)
    return code


def user_error(exc: BaseException) -> BaseException | None:
    """The SwapstreamError behind ``exc`` (itself, or the one a Ray worker raised: Ray's wrapper keeps
    it as ``cause``), else None."""
    from models.errors import SwapstreamError

    for _ in range(4):
        cause = getattr(exc, "cause", None)
        if isinstance(exc, SwapstreamError) and not isinstance(cause, BaseException):
            return exc
        if not isinstance(cause, BaseException):
            return None
        exc = cause
    return None
