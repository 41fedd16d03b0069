#!/usr/bin/env python
"""Download the T15 brain-to-text dataset from Dryad into this repository's ``data/`` directory.

The dataset (DOI ``doi:10.5061/dryad.dncjsxm85``) is listed through the Dryad API v2: the last version
of the dataset is taken, every file except ``README.md`` is downloaded and every zip file is extracted
into the data directory.

Downloads resume from ``<name>.part`` files, are verified against the checksums Dryad publishes and
are renamed into place only once complete.  Re-running the script skips files that are already
present and zip files that were already extracted.

Examples::

    python download_data.py                      # everything, into <repo>/data
    python download_data.py --list               # show the files and their sizes
    python download_data.py --files '*.pkl' t15_pretrained_rnn_baseline.zip
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from nejm_b2txt_utils.cli_errors import ConfigError, print_bad_input  # stdlib only: no environment needed

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - exercised only without tqdm
    tqdm = None

DEFAULT_DOI = "doi:10.5061/dryad.dncjsxm85"
DEFAULT_API_BASE = "https://datadryad.org"
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_TIMEOUT = 60.0
SKIPPED_FILES = ("README.md",)
ZIP_MIME_TYPE = "application/zip"
CHUNK_SIZE = 1 << 20
USER_AGENT = "nejm-b2txt-download_data/1.0 (+https://github.com/Neuroprosthetics-Lab/nejm-brain-to-text)"

log = logging.getLogger("download_data")


class DownloadError(Exception):
    """An error that ends the program with a one-line message and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1, http_status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.http_status = http_status


@dataclass(frozen=True)
class DryadFile:
    """One file of a Dryad dataset version."""

    name: str
    size: int
    url: str
    mime_type: str = ""
    digest: str | None = None
    digest_type: str | None = None

    @property
    def is_zip(self) -> bool:
        return self.mime_type == ZIP_MIME_TYPE


# --------------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------------


def _open(url: str, timeout: float, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """Open ``url``; network and HTTP failures become :class:`DownloadError` with exit code 2."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"HTTP {err.code} {err.reason} for {url}", 2, http_status=err.code) from None
    except urllib.error.URLError as err:
        raise DownloadError(_unreachable(url, err.reason), exit_code=2) from None
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(_unreachable(url, err), exit_code=2) from None


def _unreachable(url: str, reason: object) -> str:
    return f"cannot reach {url}: {reason or 'unknown error'}; check your network or use --api_base"


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    with _open(url, timeout, {"Accept": "application/json"}) as response:
        try:
            body = response.read()
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(_unreachable(url, err), exit_code=2) from None
    try:
        data = json.loads(body)
    except ValueError:
        raise DownloadError(f"invalid JSON from {url}", exit_code=2) from None
    if not isinstance(data, dict):
        raise DownloadError(f"unexpected JSON from {url}", exit_code=2)
    return data


def _iter_pages(url: str, key: str, timeout: float) -> Iterator[dict[str, Any]]:
    """Yield the items under ``_embedded[key]`` of a HAL listing, following ``_links.next``."""
    seen: set[str] = set()
    while url and url not in seen:
        seen.add(url)
        page = _get_json(url, timeout)
        yield from page.get("_embedded", {}).get(key, [])
        next_href = page.get("_links", {}).get("next", {}).get("href")
        url = urllib.parse.urljoin(url, next_href) if next_href else ""


# --------------------------------------------------------------------------------------------------
# Dataset listing
# --------------------------------------------------------------------------------------------------


def list_dataset_files(
    doi: str, api_base: str = DEFAULT_API_BASE, timeout: float = DEFAULT_TIMEOUT
) -> list[DryadFile]:
    """List the files of the last version of the Dryad dataset ``doi``."""
    base = api_base.rstrip("/") + "/"
    versions_url = urllib.parse.urljoin(base, f"api/v2/datasets/{urllib.parse.quote(doi, safe='')}/versions")
    versions = list(_iter_pages(versions_url, "stash:versions", timeout))
    if not versions:
        raise DownloadError(f"no versions of {doi} found at {versions_url}", exit_code=2)
    try:
        files_href = versions[-1]["_links"]["stash:files"]["href"]
    except (KeyError, TypeError):
        raise DownloadError(f"the last version of {doi} has no file listing", exit_code=2) from None
    log.debug("using version %s", versions[-1].get("_links", {}).get("self", {}).get("href", "?"))

    files = []
    for entry in _iter_pages(urllib.parse.urljoin(base, files_href), "stash:files", timeout):
        name = entry["path"]
        if not _is_safe_name(name):
            raise DownloadError(f"refusing unsafe file name from Dryad: {name!r}")
        files.append(
            DryadFile(
                name=name,
                size=int(entry.get("size", -1)),
                url=urllib.parse.urljoin(base, entry["_links"]["stash:download"]["href"]),
                mime_type=entry.get("mimeType", ""),
                digest=entry.get("digest") or None,
                digest_type=entry.get("digestType") or None,
            )
        )
    return files


def _is_safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def select_files(files: Sequence[DryadFile], patterns: Sequence[str] | None) -> list[DryadFile]:
    """Drop ``README.md`` (unless named exactly) and keep the files matching any of ``patterns``."""
    selected = []
    for f in files:
        if f.name in SKIPPED_FILES and f.name not in (patterns or ()):
            continue
        if patterns and not any(fnmatch.fnmatch(f.name, p) for p in patterns):
            continue
        selected.append(f)
    return selected


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------------


class _Adler32:
    def __init__(self) -> None:
        self.value = 1

    def update(self, data: bytes) -> None:
        self.value = zlib.adler32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


class _Crc32(_Adler32):
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)


def _new_hasher(digest_type: str) -> Any:
    algo = digest_type.lower().replace("-", "").replace("_", "")
    if algo == "adler32":
        return _Adler32()
    if algo == "crc32":
        return _Crc32()
    try:
        return hashlib.new(algo)
    except ValueError:
        return None


def file_digest(path: Path, digest_type: str) -> str | None:
    """Return the hex digest of ``path`` or ``None`` if ``digest_type`` is not supported."""
    hasher = _new_hasher(digest_type)
    if hasher is None:
        return None
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify_checksum(path: Path, digest: str | None, digest_type: str | None) -> tuple[bool, str | None]:
    """Check ``path`` against ``digest``; return ``(ok, actual_digest)``.

    Without a digest, or with an unsupported digest type, the file is accepted (``actual`` is None).
    """
    if not digest or not digest_type:
        return True, None
    actual = file_digest(path, digest_type)
    if actual is None:
        log.warning("cannot verify %s: unsupported digest type %r", path.name, digest_type)
        return True, None
    return actual.lower() == digest.strip().lower(), actual


# --------------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------------


def _progress(name: str, total: int, initial: int) -> Any:
    if tqdm is None:
        return contextlib.nullcontext(None)
    return tqdm(
        total=total if total >= 0 else None,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        leave=False,
        disable=None,  # no bar when stderr is not a terminal
    )


def _resume_offset(response: http.client.HTTPResponse, offset: int) -> int:
    """Return the offset the response body starts at (0 unless a matching 206 answer)."""
    if offset == 0 or response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return 0
    return offset if start == offset else 0


def _copy_body(response: IO[bytes], out: IO[bytes], bar: Any, url: str) -> None:
    while True:
        try:
            chunk = response.read(CHUNK_SIZE)
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(
                _unreachable(url, err) + " (partial download kept; re-run to resume)", exit_code=2
            ) from None
        if not chunk:
            return
        out.write(chunk)
        if bar is not None:
            bar.update(len(chunk))


def download_file(f: DryadFile, data_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download ``f`` into ``data_dir`` (resuming a ``.part`` file) and verify it; return its path."""
    final = data_dir / f.name
    part = data_dir / (f.name + ".part")

    if final.exists() and (f.size < 0 or final.stat().st_size == f.size):
        ok, _ = verify_checksum(final, f.digest, f.digest_type)
        if ok:
            log.info("%s: already present, skipping", f.name)
            return final
        log.warning("%s: present but checksum differs, downloading again", f.name)

    offset = part.stat().st_size if part.exists() else 0
    if f.size >= 0 and offset > f.size:
        log.warning("%s: partial file is larger than expected, starting over", f.name)
        part.unlink()
        offset = 0

    if f.size >= 0 and offset == f.size:
        log.info("%s: partial file is complete, verifying", f.name)
    else:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = _open(f.url, timeout, headers)
        except DownloadError as err:
            if offset and err.http_status == 416:  # range not satisfiable: the .part is unusable
                log.warning("%s: server rejected resume, starting over", f.name)
                part.unlink()
                return download_file(f, data_dir, timeout)
            raise
        with response:
            start = _resume_offset(response, offset)
            if offset and start:
                log.info("%s: resuming at %s", f.name, _human(start))
            elif offset:
                log.info("%s: server does not support resuming, starting over", f.name)
            else:
                log.info("%s: downloading %s", f.name, _human(f.size) if f.size >= 0 else "")
            with open(part, "ab" if start else "wb") as out, _progress(f.name, f.size, start) as bar:
                _copy_body(response, out, bar, f.url)

    size = part.stat().st_size
    if f.size >= 0 and size < f.size:
        raise DownloadError(
            f"{f.name}: incomplete download ({size} of {f.size} bytes); re-run to resume", exit_code=2
        )
    if f.size >= 0 and size > f.size:
        part.unlink()
        raise DownloadError(f"{f.name}: size mismatch: expected {f.size} bytes, got {size}")
    ok, actual = verify_checksum(part, f.digest, f.digest_type)
    if not ok:
        part.unlink()
        raise DownloadError(f"{f.name}: {f.digest_type} checksum mismatch: expected {f.digest}, got {actual}")
    os.replace(part, final)
    return final


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


def _check_member(name: str) -> None:
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise DownloadError(f"refusing to extract absolute path {name!r}")
    if ".." in PurePosixPath(normalized).parts:
        raise DownloadError(f"refusing to extract path with '..': {name!r}")


def _marker_path(zip_path: Path, dest: Path) -> Path:
    return dest / f".{zip_path.name}.extracted"


def _zip_signature(zip_path: Path) -> str:
    st = zip_path.stat()
    return f"{zip_path.name} {st.st_size} {st.st_mtime_ns}\n"


def extract_zip(zip_path: Path, dest: Path) -> bool:
    """Extract ``zip_path`` into ``dest``; return False if a previous extraction already completed.

    Members with absolute paths or ``..`` components are rejected before anything is written.  A marker
    file ``.<zip name>.extracted`` records a completed extraction; it is honoured only while the zip is
    unchanged and all its members still exist with the right size.
    """
    marker = _marker_path(zip_path, dest)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(info.filename)
            if marker.exists() and marker.read_text() == _zip_signature(zip_path):
                if all(
                    (dest / m.filename).is_dir() if m.is_dir() else _has_size(dest / m.filename, m.file_size)
                    for m in members
                ):
                    log.info("%s: already extracted, skipping", zip_path.name)
                    return False
            log.info("%s: extracting %d entries", zip_path.name, len(members))
            marker.unlink(missing_ok=True)
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{zip_path.name}: not a valid zip file ({err})") from None
    marker.write_text(_zip_signature(zip_path))
    return True


def _has_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download the T15 brain-to-text dataset from Dryad and extract its zip files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="where to put the data")
    parser.add_argument("--doi", default=DEFAULT_DOI, help="Dryad dataset DOI")
    parser.add_argument("--api_base", default=DEFAULT_API_BASE, help="Dryad server")
    parser.add_argument(
        "--files",
        nargs="+",
        metavar="PATTERN",
        help="only files whose names match one of these shell patterns, e.g. '*.pkl'",
    )
    parser.add_argument("--no_extract", action="store_true", help="do not extract downloaded zip files")
    parser.add_argument("--list", action="store_true", help="list the files with their sizes and exit")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="network timeout in seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    return parser.parse_args(argv)


def _check_disk_space(files: Sequence[DryadFile], data_dir: Path) -> None:
    needed = sum(max(f.size, 0) for f in files if not (data_dir / f.name).exists())
    free = shutil.disk_usage(data_dir).free
    if needed > free:
        log.warning("the download needs %s but only %s is free in %s", _human(needed), _human(free), data_dir)


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise ConfigError(f"--timeout: expected seconds > 0, got {args.timeout}")
    files = select_files(list_dataset_files(args.doi, args.api_base, args.timeout), args.files)
    if args.files and not files:
        raise ConfigError(f"--files: no file of {args.doi} matches {' '.join(args.files)}")

    if args.list:
        for f in files:
            sys.stdout.write(f"{f.size:>14,d}  {_human(f.size):>9}  {f.name}\n")
        sys.stdout.write(f"{sum(max(f.size, 0) for f in files):>14,d}  total ({len(files)} files)\n")
        return 0

    data_dir: Path = args.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _check_disk_space(files, data_dir)
    log.info("downloading %d file(s) of %s into %s", len(files), args.doi, data_dir)
    for f in files:
        path = download_file(f, data_dir, args.timeout)
        if f.is_zip and not args.no_extract:
            extract_zip(path, data_dir)
    log.info("done")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return run(args)
    except DownloadError as err:
        log.error("error: %s", err)
        return err.exit_code
    except ConfigError as err:
        return print_bad_input(err)
    except KeyboardInterrupt:
        log.error("interrupted; re-run the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
