"""atomic_io: all or nothing, ordinary permissions, and never replacing what is not a regular file."""

from __future__ import annotations

import os
import stat

import pytest

from nejm_b2txt_utils.atomic_io import atomic_open, atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_gets_the_umask_permissions_not_0600(tmp_path):
    """Reported: params files, results.pkl, words.txt came out 0600 (mkstemp's), unreadable to other accounts."""
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        assert _mode(tmp_path / "a.json") == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "b")
        assert _mode(tmp_path / "b.txt") == 0o600
    finally:
        os.umask(old)


def test_an_existing_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_failed_block_leaves_the_old_content_and_no_temp_file(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["d.txt"]


def test_a_folder_or_a_device_is_never_replaced(tmp_path):
    """Reported: tune_weights.py --out /dev/full (as root) replaced the device with a regular file."""
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="exists and is not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
