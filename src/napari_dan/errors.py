"""Exceptions with messages a person can act on: the project's one error vocabulary.

Every error the package raises on purpose is a :class:`DanError`; the command line turns them into
one line on stderr and an exit code (docs/cli.md):

- :class:`UsageError`: an option or argument of the call cannot work (bad device, an output folder
  that is a file or read-only, an unreadable PSF): exit 2, nothing was processed;
- :class:`InputError`: one image (or a parameter for it) cannot be processed: the file fails,
  the others still run, exit 1;
- :class:`CheckpointError` / :class:`UnknownModelError`: the model cannot be loaded: exit 1;
- :class:`OutputBusy`: another run is writing the same output right now: that file fails;
- :class:`Cancelled` / :class:`Terminated`: the caller (or a signal) stopped the run.
"""

from __future__ import annotations

import re

__all__ = ["DanError", "CheckpointError", "UnknownModelError", "InputError", "UsageError",
           "OutputBusy", "Cancelled", "Terminated", "EstimateWarning", "clean_message"]

# ANSI escape sequences and other control characters (a message may quote bytes from a file)
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_message(text: object, limit: int = 500) -> str:
    """``text`` as one printable line: escape sequences and control characters removed, newlines
    folded, cut to ``limit`` characters (a quoted file name or value can be arbitrary bytes)."""
    s = _CONTROL.sub("", str(text).replace("\r", " ").replace("\n", " ").replace("\t", " "))
    s = re.sub(r" {2,}", " ", s).strip()
    return s if len(s) <= limit else s[:limit - 3] + "..."


class DanError(Exception):
    """Base class of every napari-dan error."""


class CheckpointError(DanError, ValueError):
    """A checkpoint file could not be used; the message names the file and the problem."""

    def __init__(self, message: str = ""):
        super().__init__(clean_message(message))


class UnknownModelError(DanError, KeyError):
    """A model name that is neither bundled nor a file; the message lists the bundled models."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputError(DanError, ValueError):
    """The image (or a parameter) cannot be processed as given."""


class UsageError(InputError):
    """An argument of the whole call cannot work (the command line exits with 2)."""


class OutputBusy(DanError):
    """Another process is writing the same output file right now; nothing was touched."""


class Cancelled(DanError):
    """The caller asked to stop; nothing was half-written."""


class EstimateWarning(UserWarning):
    """The blind kernel estimate says little: kernels at an end of the model's PSF range, or
    from noisy or flat fields. The same sentence is ``metadata["kernel_fwhm"]["warning"]``
    (which the widget shows under the kernel and the CLI prints as a ``warning:`` line)."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (or SIGHUP): unwinds like Ctrl-C, so every partial file is
    removed on the way out. ``signum`` is the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)
