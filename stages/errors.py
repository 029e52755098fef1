"""Errors a user can fix. The CLI prints their one-line message and exits with code 2."""

from __future__ import annotations


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
