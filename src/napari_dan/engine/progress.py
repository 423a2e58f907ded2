"""Progress and cancellation of a run: work units counted, ``(done, total)`` yielded after
each, ``cancel`` checked before each (one mechanism for the widget, the CLI and the API)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from ..errors import Cancelled, InputError

__all__ = ["Progress", "cancel_check", "relay", "drive"]


class Progress:
    def __init__(self, cancel):
        self.done, self.total = 0, 0
        self.cancel = cancel_check(cancel)
        self.planes_written = 0

    def check(self) -> None:
        if self.cancel():
            raise Cancelled(f"stopped by the caller after {self.done} of {self.total} steps; "
                            f"{self.planes_written} complete plane(s) written")


def cancel_check(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return lambda: bool(cancel.is_set())
    if callable(cancel):
        return lambda: bool(cancel())
    raise InputError(f"cancel must be a callable returning bool or a threading.Event, got "
                     f"{type(cancel).__name__}")


def relay(gen: Generator, progress: Callable[[int, int], Any] | None = None):
    """Yield an engine generator's ``(done, total)`` steps, also reporting them to ``progress``;
    return its value. However it ends (an error in ``progress``, a caller that stops iterating),
    the engine generator is closed at once, so its own clean-up (the thread count it set, the
    device memory it holds) runs now, not whenever the garbage collector gets to it."""
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a callable (done, total) or None, got "
                         f"{type(progress).__name__}")
    try:
        while True:
            try:
                done, total = next(gen)
            except StopIteration as stop:
                return stop.value
            if progress is not None:
                progress(done, total)
            yield done, total
    finally:
        gen.close()


def drive(gen: Generator, progress: Callable[[int, int], Any] | None = None):
    """Run an engine generator to its end and return its value, reporting ``(done, total)``."""
    relayed = relay(gen, progress)
    while True:
        try:
            next(relayed)
        except StopIteration as stop:
            return stop.value
