"""Tests for ``download_data.py`` against a local imitation of the Dryad API v2."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "download_data.py"
DOI = "doi:10.5061/dryad.dncjsxm85"
QUOTED_DOI = "doi%3A10.5061%2Fdryad.dncjsxm85"
HDF5_MEMBER = "hdf5_data_final/t15.2023.08.13/data_val.hdf5"


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("download_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is created
    spec.loader.exec_module(module)
    return module


dd = _load_module()


def _make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(HDF5_MEMBER, b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    return buf.getvalue()


PKL_BYTES = bytes(i * 7 % 251 for i in range(1000))
ZIP_BYTES = _make_zip()


class FakeDryad:
    """State of the fake server: the files it serves and the requests it has seen."""

    def __init__(self, *, bad_md5: bool = False, honor_range: bool = True) -> None:
        self.honor_range = honor_range
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.lock = threading.Lock()
        # id -> (name, body, mimeType, digest, digestType)
        self.files: dict[int, tuple[str, bytes, str, str | None, str | None]] = {
            1: ("README.md", b"# readme\n", "text/markdown", None, None),
            2: (
                "t15_copyTask.pkl",
                PKL_BYTES,
                "application/octet-stream",
                "0" * 32 if bad_md5 else hashlib.md5(PKL_BYTES).hexdigest(),
                "md5",
            ),
            3: ("t15_personalUse.pkl", b"personal use data", "application/octet-stream", None, None),
            4: (
                "t15_copyTask_neuralData.zip",
                ZIP_BYTES,
                "application/zip",
                hashlib.sha256(ZIP_BYTES).hexdigest(),
                "sha-256",
            ),
            # only in the old version 1: must never be downloaded
            9: ("old_version_file.pkl", b"stale", "application/octet-stream", None, None),
        }
        self.version_files = {1: [9], 2: [1, 2, 3, 4]}

    def downloads(self, name: str) -> list[str | None]:
        """Range headers of the download requests made for ``name``."""
        file_id = next(i for i, f in self.files.items() if f[0] == name)
        with self.lock:
            return [rng for path, rng in self.requests if path == f"/api/v2/files/{file_id}/download"]

    def file_entry(self, file_id: int) -> dict[str, Any]:
        name, body, mime, digest, digest_type = self.files[file_id]
        entry: dict[str, Any] = {
            "path": name,
            "size": len(body),
            "mimeType": mime,
            "_links": {"stash:download": {"href": f"/api/v2/files/{file_id}/download"}},
        }
        if digest:
            entry["digest"] = digest
            entry["digestType"] = digest_type
        return entry


def _handler(state: FakeDryad) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the server
            pass

        def _json(self, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/hal+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            with state.lock:
                state.requests.append((self.path, self.headers.get("Range")))
            path, _, query = self.path.partition("?")
            parts = path.strip("/").split("/")
            if path == f"/api/v2/datasets/{QUOTED_DOI}/versions":
                versions = [
                    {
                        "_links": {
                            "self": {"href": f"/api/v2/versions/{v}"},
                            "stash:files": {"href": f"/api/v2/versions/{v}/files"},
                        }
                    }
                    for v in (1, 2)
                ]
                return self._json({"_embedded": {"stash:versions": versions}, "count": 2})
            if parts[:3] == ["api", "v2", "versions"] and parts[-1] == "files":
                ids = state.version_files[int(parts[3])]
                page = 2 if query == "page=2" else 1
                chunk = ids[:2] if page == 1 else ids[2:]
                links: dict[str, Any] = {"self": {"href": self.path}}
                if page == 1 and len(ids) > 2:
                    links["next"] = {"href": f"{path}?page=2"}
                return self._json(
                    {"_embedded": {"stash:files": [state.file_entry(i) for i in chunk]}, "_links": links}
                )
            if parts[:3] == ["api", "v2", "files"] and parts[-1] == "download":
                # like Dryad, redirect to the storage URL (Range must survive the redirect)
                self.send_response(302)
                self.send_header("Location", f"/blobs/{parts[3]}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if parts[0] == "blobs":
                return self._serve_blob(state.files[int(parts[1])][1])
            self.send_error(404)
            return None

        def _serve_blob(self, body: bytes) -> None:
            rng = self.headers.get("Range")
            if rng and state.honor_range and rng.startswith("bytes="):
                start = int(rng[len("bytes=") :].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                body = body[start:]
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def make_server() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(**kwargs: Any) -> tuple[str, FakeDryad]:
        state = FakeDryad(**kwargs)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}", state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _run(base: str, data_dir: Path, *extra: str) -> int:
    return dd.main(["--api_base", base, "--data_dir", str(data_dir), "--timeout", "5", *extra])


def test_full_download_and_extraction(make_server: Any, tmp_path: Path) -> None:
    base, state = make_server()
    assert _run(base, tmp_path) == 0

    assert (tmp_path / "t15_copyTask.pkl").read_bytes() == PKL_BYTES
    assert (tmp_path / "t15_personalUse.pkl").read_bytes() == b"personal use data"
    assert (tmp_path / "t15_copyTask_neuralData.zip").read_bytes() == ZIP_BYTES
    assert (tmp_path / HDF5_MEMBER).read_bytes().startswith(b"\x89HDF")
    assert not (tmp_path / "README.md").exists()  # README is skipped
    assert not (tmp_path / "old_version_file.pkl").exists()  # the last version is used
    assert not list(tmp_path.glob("*.part"))
    paths = [p for p, _ in state.requests]
    assert "/api/v2/versions/2/files?page=2" in paths  # pagination followed
    assert not any(p.startswith("/api/v2/versions/1/") for p in paths)
    assert state.downloads("README.md") == []

    # a second run downloads and extracts nothing
    hdf5 = tmp_path / HDF5_MEMBER
    mtime = hdf5.stat().st_mtime_ns
    n_requests = len(state.requests)
    time.sleep(0.01)
    assert _run(base, tmp_path) == 0
    assert not any("/download" in p or "/blobs/" in p for p, _ in state.requests[n_requests:])
    assert hdf5.stat().st_mtime_ns == mtime


def test_files_filter_and_no_extract(make_server: Any, tmp_path: Path) -> None:
    base, state = make_server()
    assert _run(base, tmp_path, "--files", "*.zip", "--no_extract") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t15_copyTask_neuralData.zip"]
    assert state.downloads("t15_copyTask.pkl") == []

    assert _run(base, tmp_path, "--files", "t15_copyTask*.pkl") == 0
    assert (tmp_path / "t15_copyTask.pkl").read_bytes() == PKL_BYTES
    assert not (tmp_path / "t15_personalUse.pkl").exists()

    assert _run(base, tmp_path, "--files", "nothing_matches*") != 0


def test_list(make_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, state = make_server()
    assert _run(base, tmp_path / "data", "--list") == 0
    out = capsys.readouterr().out
    assert "t15_copyTask.pkl" in out and "t15_copyTask_neuralData.zip" in out
    assert f"{len(PKL_BYTES):,d}" in out
    assert not (tmp_path / "data").exists()
    assert not any("/blobs/" in p for p, _ in state.requests)


def test_resume_from_part_file(make_server: Any, tmp_path: Path) -> None:
    base, state = make_server()
    half = len(PKL_BYTES) // 2
    (tmp_path / "t15_copyTask.pkl.part").write_bytes(PKL_BYTES[:half])

    assert _run(base, tmp_path, "--files", "t15_copyTask.pkl") == 0
    assert state.downloads("t15_copyTask.pkl") == [f"bytes={half}-"]
    assert any(p.startswith("/blobs/") and rng == f"bytes={half}-" for p, rng in state.requests)
    assert (tmp_path / "t15_copyTask.pkl").read_bytes() == PKL_BYTES
    assert not (tmp_path / "t15_copyTask.pkl.part").exists()


def test_resume_falls_back_when_server_ignores_range(make_server: Any, tmp_path: Path) -> None:
    base, _ = make_server(honor_range=False)
    (tmp_path / "t15_copyTask.pkl.part").write_bytes(b"garbage!")
    assert _run(base, tmp_path, "--files", "t15_copyTask.pkl") == 0
    assert (tmp_path / "t15_copyTask.pkl").read_bytes() == PKL_BYTES


def test_checksum_mismatch(make_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base, _ = make_server(bad_md5=True)
    assert _run(base, tmp_path, "--files", "t15_copyTask.pkl") == 1
    assert not (tmp_path / "t15_copyTask.pkl").exists()
    assert not (tmp_path / "t15_copyTask.pkl.part").exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "t15_copyTask.pkl" in errors[0] and "0" * 32 in errors[0]
    assert hashlib.md5(PKL_BYTES).hexdigest() in errors[0]


def test_extract_rejects_path_traversal(tmp_path: Path) -> None:
    for bad in ("../evil.txt", "/abs/evil.txt", "a/../../evil.txt"):
        zip_path = tmp_path / "bad.zip"
        with zipfile.ZipFile(zip_path, "w") as zf:
            zf.writestr("ok.txt", b"ok")
            zf.writestr(bad, b"evil")
        dest = tmp_path / "out"
        with pytest.raises(dd.DownloadError, match="refusing"):
            dd.extract_zip(zip_path, dest)
        assert not (dest / "ok.txt").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_extract_is_idempotent(tmp_path: Path) -> None:
    zip_path = tmp_path / "d.zip"
    zip_path.write_bytes(ZIP_BYTES)
    assert dd.extract_zip(zip_path, tmp_path) is True
    assert dd.extract_zip(zip_path, tmp_path) is False
    (tmp_path / HDF5_MEMBER).unlink()  # a missing member forces a new extraction
    assert dd.extract_zip(zip_path, tmp_path) is True
    assert (tmp_path / HDF5_MEMBER).exists()


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the socket is closed: nothing listens on the port
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--api_base",
            f"http://127.0.0.1:{port}",
            "--data_dir",
            str(tmp_path),
            "--timeout",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert time.monotonic() - start < 10
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot reach http://127.0.0.1:{port}/")
    assert "check your network or use --api_base" in lines[0]
    assert "Traceback" not in proc.stderr


def test_http_error_is_one_line(make_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base, _ = make_server()
    assert _run(base, tmp_path, "--doi", "doi:10.0/unknown") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "HTTP 404" in errors[0] and "\n" not in errors[0]


def test_help() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for option in ("--data_dir", "--doi", "--api_base", "--files", "--no_extract", "--list", "--timeout"):
        assert option in proc.stdout


def test_data_download_link_file() -> None:
    link = (REPO_ROOT / "data_download_link.txt").read_text().strip()
    assert link == "https://datadryad.org/dataset/" + DOI


def test_works_without_tqdm(make_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dd, "tqdm", None)
    base, _ = make_server()
    assert _run(base, tmp_path, "--files", "*.pkl") == 0
    assert (tmp_path / "t15_copyTask.pkl").read_bytes() == PKL_BYTES


def test_corrupt_existing_file_is_downloaded_again(make_server: Any, tmp_path: Path) -> None:
    base, state = make_server()
    (tmp_path / "t15_copyTask.pkl").write_bytes(b"x" * len(PKL_BYTES))  # right size, wrong md5
    assert _run(base, tmp_path, "--files", "t15_copyTask.pkl") == 0
    assert (tmp_path / "t15_copyTask.pkl").read_bytes() == PKL_BYTES
    assert state.downloads("t15_copyTask.pkl") == [None]
