"""Supervise the child processes of a pipeline run: start with a log file, wait until ready, and stop
every one of them on normal exit, on failure, on Ctrl-C and on SIGTERM.

A process group per child means ``stop`` also takes down whatever the child started itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from nejm_b2txt_utils.memory import peak_rss_mb

log = logging.getLogger(__name__)


class ChildProcess:
    """One supervised child: ``start()``, ``wait_ready(check)``, ``alive``, ``stop()`` (idempotent)."""

    def __init__(self, name: str, cmd: Sequence[str], log_path: str | os.PathLike, env: dict | None = None,
                 cwd: str | os.PathLike | None = None):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        log.info("starting %s: %s (log: %s)", self.name, " ".join(self.cmd), self.log_path)
        self.proc = subprocess.Popen(self.cmd, stdout=self._log_fh, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.cwd, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n_lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n_lines:])
        except OSError:
            return ""

    def wait_ready(self, check: Callable[[], bool], timeout_s: float, poll_s: float = 0.2) -> None:
        """Poll ``check()`` until it is true; raise with the log tail if the child dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                                   f"last lines of {self.log_path}:\n{self.tail()}")
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - readiness probes may fail until the service is up
                pass
            time.sleep(poll_s)
        raise TimeoutError(f"{self.name} not ready within {timeout_s:.0f} s; last lines of {self.log_path}:\n"
                           f"{self.tail()}")

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory of the child (VmHWM, MB), while it is alive; ``None`` after."""
        if self.proc is None:
            return None
        value = peak_rss_mb(self.proc.pid)
        return None if value is None else round(value, 1)

    def kill(self) -> None:
        """SIGKILL the whole process group (used by fault-injection tests)."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
            log.info("stopped %s", self.name)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None


class Supervisor:
    """Owns children; stops them all (newest first) at exit, on SIGINT/SIGTERM, or when used as a context."""

    def __init__(self) -> None:
        self.children: list[ChildProcess] = []
        self._installed = False

    def start(self, child: ChildProcess) -> ChildProcess:
        self._install_handlers()
        self.children.append(child.start())
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log.warning("could not stop %s: %s", child.name, exc)
        self.children.clear()

    def _install_handlers(self) -> None:
        if self._installed:
            return
        self._installed = True
        atexit.register(self.stop_all)

        def _on_signal(signum, _frame):
            self.stop_all()
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _on_signal)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
