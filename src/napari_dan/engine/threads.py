"""CPU threads: how many the engine gives PyTorch, chosen from what other processes leave idle.

PyTorch's OpenMP threads spin and wait for each other at every operation. When another process
keeps one of two cores busy, two threads then ran 1.33x *slower* than one (docs/benchmarks.md).
``threads="auto"`` avoids that: before the kernel estimation and before every plane it measures
how much of this process's CPUs other processes used since the last look (from ``/proc/stat``,
summed over the CPUs this process may run on, minus this process's own CPU time) and uses the
cores left idle, at least one and at most the thread count PyTorch had when the call began (so
``OMP_NUM_THREADS`` and ``torch.set_num_threads`` remain a cap). An integer fixes the count;
``None`` leaves PyTorch's setting alone (the API's default). The previous count is restored when
the call ends. Without ``/proc/stat`` (macOS, Windows) "auto" keeps PyTorch's count.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import torch

from ..errors import InputError

__all__ = ["ThreadPolicy", "available_cpus", "check_threads", "others_busy_cores"]

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_last: tuple[float, float, float] | None = None  # (monotonic time, busy seconds, own seconds)
_STALE_S, _MIN_WINDOW_S = 30.0, 0.05


def available_cpus() -> list[int]:
    """The CPU numbers this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def _busy_seconds(cpus: list[int]) -> float | None:
    """CPU seconds spent busy (not idle, not waiting for I/O) on ``cpus`` since boot."""
    want = {f"cpu{c}" for c in cpus}
    total = 0.0
    found = 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if name in want:
                    v = [int(x) for x in rest.split()]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    total += (sum(v[:8]) - idle) / _HZ  # user..steal, guest is inside user
                    found += 1
    except (OSError, ValueError):
        return None
    return total if found == len(want) else None


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def others_busy_cores() -> float | None:
    """How many of this process's CPUs other processes kept busy since the previous call (a
    50 ms sample when there was none recently); None where ``/proc/stat`` is not available."""
    global _last
    cpus = available_cpus()
    now, busy, own = time.monotonic(), _busy_seconds(cpus), _own_seconds()
    if busy is None:
        return None
    if _last is None or now - _last[0] > _STALE_S or now - _last[0] < _MIN_WINDOW_S:
        time.sleep(_MIN_WINDOW_S)
        _last = (now, busy, own)
        now, busy, own = time.monotonic(), _busy_seconds(cpus), _own_seconds()
        if busy is None:
            return None
    t0, b0, o0 = _last
    _last = (now, busy, own)
    return max(0.0, ((busy - b0) - (own - o0)) / max(now - t0, 1e-6))


def check_threads(threads) -> None:
    """Raise :class:`InputError` unless ``threads`` is "auto", a whole number >= 1 or None."""
    if not (threads is None or threads == "auto" or (isinstance(threads, int)
                                                    and not isinstance(threads, bool)
                                                    and threads >= 1)):
        raise InputError(f"threads must be 'auto', a whole number >= 1 or None, got "
                         f"{threads!r}")


class ThreadPolicy:
    """Sets PyTorch's CPU thread count for one engine call (``with ThreadPolicy(...) as tp:``;
    ``tp.update()`` before each unit of work). See the module docstring."""

    def __init__(self, threads: int | str | None, device: torch.device):
        check_threads(threads)
        self.requested = threads
        self.active = threads is not None and torch.device(device).type == "cpu"
        self.used: Counter = Counter()
        self._before = torch.get_num_threads()

    def update(self) -> int:
        """Choose and set the count for the next unit of work; returns it."""
        if not self.active:
            n = torch.get_num_threads()
        elif self.requested == "auto":
            cap = max(1, self._before)
            busy = others_busy_cores()
            free = cap if busy is None else len(available_cpus()) - busy
            n = int(min(cap, max(1, round(free))))
        else:
            n = int(self.requested)
        if self.active and torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.used[n] += 1
        return n

    def summary(self) -> dict:
        return {"requested": self.requested if self.requested is not None else "unchanged",
                "used": {int(k): int(v) for k, v in sorted(self.used.items())}}

    def __enter__(self) -> ThreadPolicy:
        self._before = torch.get_num_threads()
        return self

    def __exit__(self, *exc) -> None:
        if self.active and torch.get_num_threads() != self._before:
            torch.set_num_threads(self._before)
