"""``python -m nejm_b2txt_utils.redis_server``: no unprotected network exposure, no secret on a command line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nejm_b2txt_utils.redis_server import RedisServer, free_port, is_loopback, password_config

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    return subprocess.run([sys.executable, "-m", "nejm_b2txt_utils.redis_server", *args], cwd=REPO,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=30, **kw)


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.0.0.1 -::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("127.0.0.1 10.0.0.5") and not is_loopback("myhost")
    assert not is_loopback("")


def test_network_bind_without_a_password_is_refused():
    proc = run_cli("--bind", "0.0.0.0", "--port", str(free_port()))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "0.0.0.0" in lines[0] and "REDIS_PASSWORD" in lines[0] and "--insecure_bind" in lines[0]


def test_password_on_the_command_line_warns():
    proc = run_cli("--password", "s3cret", "--print_path")
    assert proc.returncode == 0 and Path(proc.stdout.strip()).is_file()
    assert "--password shows the secret" in proc.stderr and "REDIS_PASSWORD" in proc.stderr


def test_password_from_the_environment_protects_the_server_and_stays_off_command_lines():
    psutil = pytest.importorskip("psutil")
    redis = pytest.importorskip("redis")
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    proc = subprocess.Popen([sys.executable, "-m", "nejm_b2txt_utils.redis_server", "--port", str(port)], cwd=REPO,
                            env={**base, "REDIS_PASSWORD": 'p4ss "word"'}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                assert redis.Redis(host="127.0.0.1", port=port, password='p4ss "word"').ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        commands = [" ".join(c.cmdline()) for c in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]]
        assert len(commands) == 2 and not any("p4ss" in c for c in commands)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0 or proc.returncode < 0
    assert password_config(None) == b"" and password_config('a"b') == b'requirepass "a\\"b"\n'


def test_throwaway_server_takes_its_password_from_stdin():
    redis = pytest.importorskip("redis")
    with RedisServer(password="s3cret") as server:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port).ping()
        assert server.client().ping()


def test_a_password_sent_to_a_server_without_one_is_warned_about(caplog):
    """redis-py goes on silently when AUTH meets a server with no password; connect() says so once."""
    redis = pytest.importorskip("redis")
    from nejm_b2txt_utils.redis_protocol import connect, warn_if_password_unused

    caplog.set_level(logging.WARNING, logger="nejm_b2txt_utils.redis_protocol")
    with RedisServer() as open_server:
        r = connect("127.0.0.1", open_server.port, password="s3cret")
        assert r.ping()
        warnings = [rec.getMessage() for rec in caplog.records]
        assert len(warnings) == 1 and f"127.0.0.1:{open_server.port} has no password" in warnings[0]
        caplog.clear()
        assert connect("127.0.0.1", open_server.port).ping() and not caplog.records  # no password: nothing to say
    with RedisServer(password="s3cret") as protected:
        assert connect("127.0.0.1", protected.port, password="s3cret").ping() and not caplog.records
        wrong = redis.Redis(host="127.0.0.1", port=protected.port, password="other")
        assert warn_if_password_unused(wrong, "127.0.0.1", protected.port) is False and not caplog.records
    down = redis.Redis(host="127.0.0.1", port=free_port(), password="s3cret", socket_connect_timeout=0.5)
    assert warn_if_password_unused(down, "127.0.0.1", 1) is False  # not up yet: no check, no error
