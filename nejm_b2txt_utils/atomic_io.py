"""Atomic file writes: a temp file in the target's folder, fsync, then ``os.replace``.

Every output of the project (checkpoints, HDF5 files, CSVs, JSON reports, ARPA files, pickles) goes through
this module so that a crash, Ctrl-C or full disk never leaves a half-written file under the final name:
readers see the old file or the new one, nothing in between.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["DiskFullError", "sweep_stale_temp_files", "atomic_path", "atomic_open", "atomic_write_text",
           "atomic_write_bytes", "atomic_write_json", "atomic_write_pickle", "publish_dir"]


class DiskFullError(OSError):
    """A write ran out of space; the message names the file and says that its previous content is kept."""


#: What full disks look like from writers that do not raise ``OSError(ENOSPC)`` (torch.save's zip writer).
_DISK_FULL_TEXT = ("no space left on device", "unexpected pos", "disk quota exceeded")
#: The temp names of :func:`atomic_path`: ``.<name>.<8 random chars><suffix>`` (``mkstemp``).
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return isinstance(exc, (OSError, RuntimeError)) and any(t in text for t in _DISK_FULL_TEXT)


def sweep_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files of :func:`atomic_path` writes that were killed (``kill -9``) before their rename.

    Call it where no other process writes into ``folder`` at the same time (a run's start or resume).

    Args:
        folder: the folder (a missing one has nothing to sweep).

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        if _TEMP_NAME.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success of the block it is moved onto ``path``.

    Use this for writers that want a file name (h5py, ``torch.save`` to a path, kaldifst ``write``).

    Args:
        path: the final file name; its folder is created if missing.
        suffix: the temp file's suffix (some writers check the extension).

    Returns:
        A context manager yielding the temp ``Path`` (it exists, empty, when the block starts).

    The file gets the permissions a plain ``open()`` would give it (``0o666`` minus the umask; an existing
    file keeps its own), not the temp file's private ``0o600``.

    Raises:
        IsADirectoryError: ``path`` is an existing folder.
        OSError: ``path`` exists and is not a regular file (a device such as ``/dev/null``: the rename would
            replace the device), the folder cannot be created, or the rename fails; the temp file is removed
            and ``path`` keeps its previous content.
        DiskFullError: the block or the fsync ran out of space (also torch.save's ``unexpected pos``): one
            message naming ``path``; the temp file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a file name")
    if os.path.lexists(path) and not (path.is_file() or path.is_symlink()):
        raise OSError(f"{path}: exists and is not a regular file (a device, socket or pipe); refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if not _is_disk_full(exc):
            raise
        kept = f"the previous {path.name} is kept" if path.is_file() else "nothing was written"
        full = DiskFullError(f"cannot save {path}: no space left on device; {kept}")
        full.errno = errno.ENOSPC
        raise full from exc
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_dir_mode() -> int:
    """The permissions a plain ``mkdir`` gives a folder (``0o777`` minus the umask): for a folder staged with
    ``tempfile.mkdtemp`` (``0o700``, unreadable to another user's server) before it is renamed into place."""
    return 0o777 & ~_umask()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``open()`` on a temp file beside ``path``, moved onto ``path`` only if the block succeeds.

    Args:
        path: the final file name.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: text encoding for ``"w"`` (ignored for binary).

    Returns:
        A context manager yielding the open file object.

    Raises:
        ValueError: ``mode`` is not a write mode.
        OSError: as :func:`atomic_path`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically.

    Args:
        path: the final file name (its folder is created).
        text: the content.
        encoding: text encoding.

    Returns:
        ``Path(path)``.

    Raises:
        OSError: the write or the rename failed; ``path`` keeps its previous content.
    """
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: the final file name (its folder is created).
        data: the content.

    Returns:
        ``Path(path)``.

    Raises:
        OSError: the write or the rename failed; ``path`` keeps its previous content.
    """
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """``json.dump`` ``obj`` to ``path`` atomically (UTF-8, trailing newline).

    Args:
        path: the final file name.
        obj: a JSON-serialisable value.
        indent: ``json.dumps`` indent (``None``: one line).

    Returns:
        ``Path(path)``.

    Raises:
        TypeError: ``obj`` is not JSON-serialisable (nothing is written).
        OSError: as :func:`atomic_write_text`.
    """
    text = json.dumps(obj, indent=indent) + "\n"  # serialise first: a TypeError leaves no file behind
    return atomic_write_text(path, text)


def atomic_write_pickle(path: str | os.PathLike, obj: Any) -> Path:
    """Pickle ``obj`` (highest protocol) to ``path`` atomically.

    Args:
        path: the final file name.
        obj: a picklable value.

    Returns:
        ``Path(path)``.

    Raises:
        pickle.PicklingError: ``obj`` cannot be pickled (``path`` is untouched).
        OSError: as :func:`atomic_write_text`.
    """
    with atomic_open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)


def publish_dir(src: str | os.PathLike, dst: str | os.PathLike, *, replace: bool = True) -> bool:
    """Move a finished folder ``src`` (built beside ``dst``, same filesystem) onto ``dst`` with one rename, so
    readers see the old folder or the new one, never a half-built one.

    Args:
        src: the finished folder (e.g. from ``tempfile.mkdtemp(dir=dst.parent)``).
        dst: the final folder name.
        replace: ``True``: an existing ``dst`` is renamed aside, ``src`` renamed into place, then the old one
            removed. ``False``: an existing ``dst`` wins (e.g. another process published the same thing first;
            a reader may be using it): ``src`` is removed.

    Returns:
        ``True`` if ``src`` became ``dst``; ``False`` if ``replace=False`` and ``dst`` already existed.

    The published folder gets the permissions a plain ``mkdir`` would give it (``0o777`` minus the umask), not
    ``tempfile.mkdtemp``'s private ``0o700``: a reader running as another user (a decoder loading a checkpoint)
    can open it.

    Raises:
        OSError: a rename failed for another reason (``src`` is left in place for the caller to remove).
    """
    src, dst = Path(src), Path(dst)
    os.chmod(src, default_dir_mode())
    if not replace:
        try:
            os.rename(src, dst)  # fails when dst is a non-empty folder
        except OSError:
            if not dst.is_dir():
                raise
            shutil.rmtree(src, ignore_errors=True)
            return False
        return True
    old = None
    if os.path.lexists(dst):
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return True
