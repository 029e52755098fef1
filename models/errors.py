"""Errors a user can fix, the exit codes, and the one-line text of any error.

The CLI prints a user error's one-line message and exits with code 2. At the bottom of the import graph: every
floor imports it, it imports nothing of ours."""

from __future__ import annotations

# Exit codes of every command: done; something failed (a job, an unexpected error); the user's input
# cannot be used (a SwapstreamError); interrupted (Ctrl-C, 128 + SIGINT).
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class SwapstreamError(Exception):
    """A problem with what the user gave us; the message names the file or setting and what to do."""


class InputError(SwapstreamError, ValueError):
    """An input file that cannot be used (not a video, no face in the photo, output equals input, ...)."""


class ConfigError(SwapstreamError, ValueError):
    """A config file or override that cannot be used."""


class ModelFileError(SwapstreamError, FileNotFoundError):
    """A model weight file that is missing or damaged; the message says where to put a good one."""


class WeightFileError(SwapstreamError, ValueError):
    """A model weight file that exists but cannot be used: damaged, cut short, or of another layout."""


# ------------------------------------------------------------------------------------ one-line error text


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` with its runs of whitespace made single spaces ("" if none)."""
    for line in str(text).splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def reason(exc: BaseException) -> str:
    """What went wrong, in one line and without the exception's type: FFmpeg's own words for PyAV's errors
    (``Invalid data found when processing input``, without the errno and the path PyAV repeats), the first
    line of the message otherwise, the type's name when there is no message."""
    text = getattr(exc, "strerror", None) if type(exc).__module__.split(".")[0] == "av" else None
    return first_line(text or str(exc)) or type(exc).__name__


def one_line(exc: BaseException) -> str:
    """An exception as one line for people: an error the user can fix (:class:`SwapstreamError`) as its
    message, which names the file or setting; anything else as ``Type: reason``."""
    text = reason(exc)
    if isinstance(exc, SwapstreamError) or text == type(exc).__name__:
        return text
    return f"{type(exc).__name__}: {text}"
