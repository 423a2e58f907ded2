"""Output files that several processes can share a folder for: unique partial names, one writer per
output (a lock), and a record of what produced an output (so a re-run skips only its own work).

The rules (docs/cli.md, "What is guaranteed"):

- An output is written under a hidden name unique to its writer,
  ``DIR/.<name>.<pid>-<random>.partial``, and renamed to ``DIR/<name>`` only when complete.
- Before it writes, a run takes the output's lock ``DIR/.<name>.lock`` (an OS file lock, released
  by the kernel when the process dies, so a killed run never leaves a lock that blocks the next).
  A second run that finds the lock taken does not touch the output: it reports
  :class:`~napari_dan.errors.OutputBusy` naming the holder.
- The holder of a lock may delete leftover partial files of that output (from runs killed with
  ``kill -9``): nobody else can be writing them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from pathlib import Path

from ..errors import OutputBusy

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["partial_path", "partial_glob", "OutputLock", "file_fingerprint", "FULL_HASH_LIMIT"]

#: files up to this size are hashed whole; larger ones by size and sampled blocks
FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE, _SAMPLES = 2**20, 16


def partial_path(final: str | os.PathLike) -> Path:
    """A fresh hidden name for an output being written: ``DIR/.<name>.<pid>-<random>.partial``.

    Unique per call, so two writers (two processes, or two threads) never share one."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def partial_glob(final: str | os.PathLike) -> list[Path]:
    """Every partial file of ``final`` in its folder (any writer's)."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    return sorted(final.parent.glob(f".{_glob_escape(final.name)}.*.partial"))


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class OutputLock:
    """Exclusive, non-blocking claim on one output file name (``with OutputLock(path):``).

    Raises :class:`OutputBusy` when another live process holds it. The lock file
    ``DIR/.<name>.lock`` holds the owner's pid, host and start time (for the message) and is
    deleted on release.
    """

    def __init__(self, final: str | os.PathLike):
        self.final = Path(final)
        self.path = self.final.with_name(f".{self.final.name}.lock")
        self._fd: int | None = None

    def owner(self) -> str:
        """Who holds the lock, as written in the lock file ('' when unknown)."""
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()[:200]
        except OSError:
            return ""

    def acquire(self) -> OutputLock:
        if self._fd is not None:
            return self
        for _ in range(100):  # retries only when a holder removes the file between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except (BlockingIOError, PermissionError):
                        raise self._busy() from None
                elif os.fstat(fd).st_size > 0:  # pragma: no cover - no OS locks: content decides
                    raise self._busy()
                # the holder before us may have deleted the file after we opened it: our lock is
                # then on a file nobody else will see; start again on the current one
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode())
                self._fd = fd
                return self
            except BaseException:
                if self._fd != fd:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                raise
        raise OutputBusy(f"{self.final}: could not take its lock {self.path.name} (it keeps "
                         "changing); is another run starting on it?")

    def _busy(self) -> OutputBusy:
        who = self.owner()
        return OutputBusy(f"{self.final} is being written by another napari-dan run"
                          f"{' (' + who + ')' if who else ''}; left to it. Run again when it has "
                          "finished: its output is then skipped or, with --overwrite, redone")

    def clean_stale_partials(self) -> list[Path]:
        """Delete partial files of this output left by killed runs (call while holding the lock;
        only partials of processes no longer alive on this host are removed)."""
        removed = []
        for p in partial_glob(self.final):
            pid = _partial_pid(p, self.final.name)
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
        return removed

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)  # while still locked: see acquire()
        except OSError:
            pass
        os.close(fd)  # closing releases the lock

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _partial_pid(p: Path, final_name: str) -> int | None:
    middle = p.name[len(final_name) + 2:-len(".partial")]  # "<pid>-<token>"
    try:
        return int(middle.split("-", 1)[0])
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def file_fingerprint(path: str | os.PathLike) -> str:
    """A content fingerprint of a file: SHA-256 of the whole file up to :data:`FULL_HASH_LIMIT`
    bytes, above that of its size and 16 evenly spaced 1 MiB blocks (first and last included).

    The same data under another name or folder gives the same fingerprint; another file (even one
    of the same name and size) a different one, except in the unlikely case of a large file that
    differs only between the sampled blocks."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(f"size {size}\n".encode())
    with open(p, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        else:
            for i in range(_SAMPLES):
                f.seek((size - _SAMPLE) * i // (_SAMPLES - 1))
                h.update(f.read(_SAMPLE))
    return ("sha256:" if size <= FULL_HASH_LIMIT else "sha256-sampled:") + h.hexdigest()
