"""A --redis_ip/--redis_port where something other than Redis answers: one error line, no traceback.

Reported case: an HTTP server on the port answered ``HTTP/1.1 400 Bad Request`` and the LM server died with
a 62-line ``redis.exceptions.InvalidResponse`` traceback. Right: one ``error:`` line naming the address,
a non-zero exit, at once (retrying cannot help). Also: the ``--redis_ip`` default is loopback, never the
original's lab-private address.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldilm")

from language_model.graph.toy_lm import build_toy_lm  # noqa: E402
from language_model.serving.args import parse_args  # noqa: E402
from tests.language_model._lm_testing import STANDALONE  # noqa: E402


def _http_400_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(60)

    def answer() -> None:
        try:
            while True:
                conn, _ = srv.accept()
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                conn.close()
        except OSError:
            pass

    threading.Thread(target=answer, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_a_port_that_is_not_redis_is_one_error_line(tmp_path):
    lm = build_toy_lm(tmp_path / "toy")
    srv, port = _http_400_server()
    try:
        proc = subprocess.run([sys.executable, str(STANDALONE), "--lm_path", str(lm), "--redis_ip", "127.0.0.1",
                               "--redis_port", str(port)], capture_output=True, text=True, timeout=60)
    finally:
        srv.close()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert last.startswith(f"error: 127.0.0.1:{port} did not answer as a Redis server (")
    assert "HTTP/1.1 400 Bad Request" in last


def test_the_redis_host_defaults_to_loopback():
    assert parse_args(["--lm_path", "x"]).redis_ip == "localhost"
