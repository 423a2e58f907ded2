"""Exceptions with messages a person can act on."""

from __future__ import annotations

__all__ = ["DanError", "CheckpointError", "UnknownModelError", "InputError", "Cancelled"]


class DanError(Exception):
    """Base class of every napari-dan error."""


class CheckpointError(DanError, ValueError):
    """A checkpoint file could not be used; the message names the file and the problem."""


class UnknownModelError(DanError, KeyError):
    """A model name that is neither bundled nor a file; the message lists the bundled models."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputError(DanError, ValueError):
    """The image (or a parameter) cannot be processed as given."""


class Cancelled(DanError):
    """The caller asked to stop; nothing was half-written."""
