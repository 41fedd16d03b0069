"""What the benchmarks share: latency percentiles, the summed RSS of a process tree, the JSON result on stdout.
NumPy only (psutil for the RSS sampler), so every environment's benchmarks can import it."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float], q: float, ndigits: int = 1) -> float:
    """The ``q``-th percentile of ``values`` (NumPy's linear interpolation), rounded.

    Args:
        values: the samples (any unit; non-empty).
        q: the percentile in [0, 100].
        ndigits: decimals kept.

    Returns:
        The percentile, in the samples' unit.
    """
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), ndigits)


def latency_ms(seconds: Sequence[float]) -> dict:
    """Latency summary of durations in seconds.

    Args:
        seconds: the durations (s).

    Returns:
        ``{"p50_ms", "p95_ms", "mean_ms", "max_ms", "n"}`` (ms, one decimal); ``{"n": 0}`` without samples.
    """
    if len(seconds) == 0:
        return {"n": 0}
    ms = np.asarray(seconds, dtype=float) * 1000.0
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "mean_ms": round(float(ms.mean()), 1),
            "max_ms": round(float(ms.max()), 1), "n": int(ms.size)}


class ProcessTreeRss(threading.Thread):
    """Peak summed RSS (MB) of a process and all its descendants, sampled every 50 ms in a thread (a server
    whose workers are child processes). For one process's own peak use ``nejm_b2txt_utils.memory.peak_rss_mb``.

    Args:
        pid: the root process.
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak_mb = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            try:
                total = 0
                for p in [self.proc, *self.proc.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_mb = max(self.peak_mb, total / 2**20)
            except psutil.Error:
                return
            self._halt.wait(0.05)

    def stop(self) -> float:
        """Stop sampling; returns the peak (MB, one decimal)."""
        self._halt.set()
        self.join(2)
        return round(self.peak_mb, 1)


def print_result(result: dict, indent: int | None = 2) -> None:
    """Print a benchmark's result as its one JSON object on stdout (what ``benchmarks.report`` collects)."""
    print(json.dumps(result, indent=indent), flush=True)
