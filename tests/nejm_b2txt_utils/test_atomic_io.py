"""atomic_io: all or nothing, ordinary permissions, and never replacing what is not a regular file."""

from __future__ import annotations

import os
import stat

import pytest

from nejm_b2txt_utils.atomic_io import atomic_open, atomic_write_json, atomic_write_text, publish_dir


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


def _folder(path, text):
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def test_publish_dir_replaces_a_folder_in_one_rename_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "lm"
    assert publish_dir(_folder(tmp_path / ".new1", "one"), out) is True
    assert publish_dir(_folder(tmp_path / ".new2", "two"), out) is True
    assert (out / "f.txt").read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["lm"]


def test_publish_dir_without_replace_keeps_the_folder_already_there(tmp_path):
    """Two processes converting the same model: the first one's folder stays (a reader may be using it)."""
    out = _folder(tmp_path / "model", "first")
    assert publish_dir(_folder(tmp_path / ".late", "second"), out, replace=False) is False
    assert (out / "f.txt").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert publish_dir(_folder(tmp_path / ".new", "third"), tmp_path / "other", replace=False) is True
    with pytest.raises(FileNotFoundError):
        publish_dir(tmp_path / "missing", tmp_path / "x", replace=False)


@pytest.mark.parametrize("replace", [True, False])
def test_a_published_folder_gets_the_umask_permissions_not_mkdtemp_0700(tmp_path, replace):
    """Reported: recal_NNNN/ came out 0700 (tempfile.mkdtemp's), unloadable by a decoder running as another user."""
    import tempfile

    old = os.umask(0o022)
    try:
        src = tempfile.mkdtemp(dir=tmp_path)
        assert _mode(src) == 0o700
        assert publish_dir(src, tmp_path / "model", replace=replace) is True
        assert _mode(tmp_path / "model") == 0o755
        os.umask(0o027)
        assert publish_dir(tempfile.mkdtemp(dir=tmp_path), tmp_path / "model2", replace=replace) is True
        assert _mode(tmp_path / "model2") == 0o750
    finally:
        os.umask(old)
