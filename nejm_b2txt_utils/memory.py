"""Peak resident memory (RSS) of this process or of a child, measured so that a parent's size never leaks in.

Why not ``getrusage().ru_maxrss``: on Linux a process's ``ru_maxrss`` keeps the high-water mark of the
address space that ``execve`` replaced, so a child started by a large parent reports the parent's peak
(a 1.5 GB pytest process made a 280 MB generator read 1,501 MB). ``VmHWM`` in ``/proc/<pid>/status``
belongs to the current address space only, so it is what this module reads. For a child that has
already exited only ``wait4``'s ``ru_maxrss`` is left: :class:`ChildPeakRss` samples ``VmHWM`` of the
child and its descendants while they run and uses ``ru_maxrss`` only where it must be their own (above
what the parent could have passed on).

Units: MB here means 2**20 bytes, as in the rest of the project's reports. Linux only for exact figures
(``/proc``); elsewhere this process's own figure falls back to ``ru_maxrss``.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path

_KB_PER_MB = 1024.0


def _check_pid(pid) -> int:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"pid: expected a positive int, got {pid!r}")
    return pid


def _own_ru_maxrss_mb() -> float:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / _KB_PER_MB  # bytes on macOS, KiB on Linux


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak RSS of a live process's current address space (``VmHWM``).

    Args:
        pid: the process; ``None`` = this process.

    Returns:
        MB; ``None`` when ``pid`` is gone (or a zombie) or not readable. For this process on a system without
        ``/proc``: ``ru_maxrss`` (which may include what a parent passed on; see the module docstring).

    Raises:
        ValueError: ``pid`` is not a positive int.
    """
    if pid is not None:
        _check_pid(pid)
    try:
        for line in Path(f"/proc/{'self' if pid is None else pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / _KB_PER_MB
    except (OSError, ValueError):
        pass
    if pid is None or pid == os.getpid():
        return _own_ru_maxrss_mb()
    return None


def descendants(pid: int) -> list[int]:
    """The live descendants of ``pid`` (children of any of its threads, recursively), from ``/proc``.

    Args:
        pid: a process id.

    Returns:
        Their pids, parents before children; empty when ``pid`` is gone or ``/proc`` has no ``children`` files.
    """
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = [int(x) for x in Path(f"/proc/{current}/task/{tid}/children").read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


class ChildPeakRss:
    """Peak RSS of one child process and its descendants (the largest single process), sampled from ``/proc``.

    Create it right after starting the child (the first sample is taken at once), call :meth:`stop` with
    ``wait4``'s ``ru_maxrss`` once it exited. ``VmHWM`` only grows, so a process's last sample is its peak up
    to that moment. ``ru_maxrss`` (the child's and the descendants it waited for) is used when it is above
    this process's own peak at the child's start, since then it cannot have been inherited; otherwise what
    a process reached within its last ``interval_s`` before exiting is missed (a lower bound then).

    Args:
        pid: the child's process id.
        interval_s: seconds between samples (> 0).

    Raises:
        ValueError: a bad ``pid`` or ``interval_s``.
    """

    def __init__(self, pid: int, interval_s: float = 0.1):
        self.pid = _check_pid(pid)
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected a number of seconds > 0, got {interval_s!r}")
        self.parent_peak_mb = peak_rss_mb() or 0.0
        self.sampled_mb: float | None = None
        self._interval_s = interval_s
        self._halt = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> bool:
        """One sample of the child and its descendants; False once the child is gone."""
        own = peak_rss_mb(self.pid)
        values = [v for v in (own, *(peak_rss_mb(p) for p in descendants(self.pid))) if v is not None]
        if values:
            self.sampled_mb = max(self.sampled_mb or 0.0, *values)
        return own is not None

    def _run(self) -> None:
        while not self._halt.wait(self._interval_s) and self._sample():
            pass

    def stop(self, ru_maxrss_kb: int | None = None) -> float | None:
        """Stop sampling; the child's peak RSS.

        Args:
            ru_maxrss_kb: ``ru_maxrss`` from ``os.wait4`` for the exited child (KiB), if known.

        Returns:
            MB; ``None`` when the child was gone before the first sample and ``ru_maxrss`` may be inherited.
        """
        self._halt.set()
        self._thread.join(2)
        if ru_maxrss_kb is not None and ru_maxrss_kb / _KB_PER_MB > self.parent_peak_mb:
            return max(self.sampled_mb or 0.0, ru_maxrss_kb / _KB_PER_MB)
        return self.sampled_mb
