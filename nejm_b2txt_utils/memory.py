"""Peak resident memory (RSS) of this process or of a child, measured so that a parent's size never leaks in.

Why not ``getrusage().ru_maxrss``: on Linux a process's ``ru_maxrss`` keeps the high-water mark of the
address space that ``execve`` replaced, so a child started by a large parent reports the parent's peak
(a 1.5 GB pytest process made a 280 MB generator read 1,501 MB). ``VmHWM`` in ``/proc/<pid>/status``
belongs to the current address space only, so it is what this module reads. For a child that has
already exited only ``wait4``'s ``ru_maxrss`` is left: :class:`ChildPeakRss` samples the child's
``VmHWM`` while it runs and uses ``ru_maxrss`` only where it must be the child's own (above what the
parent could have passed on).
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

_KB_PER_MB = 1024.0


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak RSS of a live process's current address space (``VmHWM``).

    Args:
        pid: the process; ``None`` = this process.

    Returns:
        MiB; ``None`` when ``pid`` is gone or not readable. For this process on a system without
        ``/proc``: ``ru_maxrss`` (which may include what a parent passed on; see the module docstring).
    """
    status = Path(f"/proc/{'self' if pid is None else int(pid)}/status")
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / _KB_PER_MB
    except (OSError, ValueError):
        pass
    if pid is None or pid == os.getpid():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _KB_PER_MB
    return None


class ChildPeakRss:
    """Peak RSS of one child process, sampled from ``/proc`` while it runs.

    Create it right after starting the child, call :meth:`stop` with ``wait4``'s ``ru_maxrss`` once it
    exited. ``VmHWM`` only grows, so the last sample is the peak up to that moment (taken every
    ``interval_s``); a ``ru_maxrss`` above this process's own peak at the child's start cannot have
    been inherited and is exact.

    Args:
        pid: the child's process id.
        interval_s: seconds between samples.
    """

    def __init__(self, pid: int, interval_s: float = 0.1):
        self.pid = pid
        self.parent_peak_mb = peak_rss_mb() or 0.0
        self.sampled_mb = 0.0
        self._interval_s = interval_s
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            value = peak_rss_mb(self.pid)
            if value is None:
                return
            self.sampled_mb = max(self.sampled_mb, value)
            self._halt.wait(self._interval_s)

    def stop(self, ru_maxrss_kb: int | None = None) -> float:
        """Stop sampling; the child's peak RSS in MiB.

        Args:
            ru_maxrss_kb: ``ru_maxrss`` from ``os.wait4`` for the exited child (KiB), if known.
        """
        self._halt.set()
        self._thread.join(2)
        if ru_maxrss_kb is not None and ru_maxrss_kb / _KB_PER_MB > self.parent_peak_mb:
            return max(self.sampled_mb, ru_maxrss_kb / _KB_PER_MB)
        return self.sampled_mb
