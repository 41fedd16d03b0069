"""One pipeline step = one child command with a "done" path: skipped when the path exists, so a re-run
reuses finished work; its output goes to the console and to ``<logs>/<name>.log``; wall time and peak
RSS are measured (:class:`nejm_b2txt_utils.memory.ChildPeakRss`: the child's own, not this driver's)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nejm_b2txt_utils.atomic_io import atomic_write_text
from nejm_b2txt_utils.memory import ChildPeakRss

log = logging.getLogger(__name__)


@dataclass
class Step:
    name: str
    cmd: list[str]
    done: Path  # exists -> the step is finished; created as a marker when the command does not create it


def run_step(step: Step, log_dir: Path, echo: bool = True) -> dict:
    """Run ``step`` unless done; raise ``RuntimeError`` naming the step and its log on failure."""
    if step.done.exists():
        log.info("[%s] already done (%s): reusing it", step.name, step.done)
        return {"reused": True}
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{step.name}.log"
    log.info("[%s] %s", step.name, " ".join(step.cmd))
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log_fh:
        try:
            proc = subprocess.Popen(step.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        except OSError as exc:  # a missing or non-executable program
            raise RuntimeError(f"step '{step.name}': cannot start {step.cmd[0]}: {exc.strerror or exc}") from exc
        memory = ChildPeakRss(proc.pid)
        try:
            for chunk in iter(lambda: proc.stdout.read1(4096), b""):
                log_fh.write(chunk)
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            memory.stop()
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_mb = memory.stop(usage.ru_maxrss)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"step '{step.name}' failed with exit code {proc.returncode}; see {log_path}")
    if not step.done.exists():
        atomic_write_text(step.done, f"finished in {wall:.1f} s\n")
    info = {"wall_s": round(wall, 1), "peak_rss_mb": None if peak_mb is None else round(peak_mb, 1)}
    log.info("[%s] done in %.1f s, peak RSS %s", step.name, wall,
             "unknown (exited before the first sample)" if peak_mb is None else f"{peak_mb:.0f} MB")
    return info
