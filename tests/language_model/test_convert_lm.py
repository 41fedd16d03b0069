"""language_model/convert_lm.py: an interrupted or failed conversion leaves no half-written --out (and a store
already there untouched); inputs that are no (gzipped) ARPA text are one line naming the file."""

from __future__ import annotations

import gzip

import pytest

import language_model.ngram.store_writer as store_writer
from language_model import convert_lm
from tests.language_model.ngram.test_store import MISSING_PREFIX_ARPA


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_interrupted_conversion_leaves_no_out_folder(tmp_path, monkeypatch, capsys):
    """New-user case: Ctrl-C left 8 of the 12 files (no header.json) while saying nothing half-written was kept."""
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(MISSING_PREFIX_ARPA)
    monkeypatch.setattr(store_writer, "check_arrays", _interrupt)  # after every array is written, before the header
    assert convert_lm.main(["--arpa", str(arpa), "--out", str(tmp_path / "x" / "st")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted (Ctrl-C); nothing half-written was kept"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["lm.arpa"]  # no store, staging, scratch or parent folder


def test_a_store_at_out_is_untouched_by_a_failed_conversion_and_replaced_by_a_finished_one(tmp_path, monkeypatch):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(MISSING_PREFIX_ARPA)
    out = tmp_path / "st"
    assert convert_lm.main(["--arpa", str(arpa), "--out", str(out)]) == 0
    before = _snapshot(out)
    assert len(before) == 12 and "header.json" in before  # 3 orders: 4 + 4 + 2 arrays, vocab.txt, header.json
    bigger = tmp_path / "bigger.arpa"
    bigger.write_text(MISSING_PREFIX_ARPA.replace("ngram 1=5", "ngram 1=6").replace("-0.9 c\n", "-0.9 c\n-1.5 d\n"))
    with monkeypatch.context() as m:
        m.setattr(store_writer, "check_arrays", _interrupt)
        assert convert_lm.main(["--arpa", str(bigger), "--out", str(out)]) == 130
    assert _snapshot(out) == before
    bad = tmp_path / "bad.arpa"
    bad.write_text(MISSING_PREFIX_ARPA.replace("-0.6 b c", "-0.6 b zz"))
    assert convert_lm.main(["--arpa", str(bad), "--out", str(out)]) == 2
    assert _snapshot(out) == before
    assert convert_lm.main(["--arpa", str(bigger), "--out", str(out)]) == 0  # a finished one replaces it
    assert (out / "vocab.txt").read_text().split() == ["</s>", "<s>", "a", "b", "c", "d", "<unk>"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.arpa", "bigger.arpa", "lm.arpa", "st"]


def test_a_folder_of_other_files_as_out_is_refused_and_kept(tmp_path, capsys):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(MISSING_PREFIX_ARPA)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert convert_lm.main(["--arpa", str(arpa), "--out", str(tmp_path / "mine")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'mine'}: holds 'notes.txt' (1 files that are not a store's); expected a missing or "
        "empty folder, or an n-gram store to replace")
    assert _snapshot(tmp_path / "mine") == {"notes.txt": b"keep"}


@pytest.mark.parametrize(("name", "content", "expected"), [
    # new-user cases: a BadGzipFile traceback, and a decode error without the file name
    ("fake.arpa.gz", b"\x1f\x8b\x08\x00not really gzip", "{p}: not a gzipped ARPA text file (after line 0: "),
    ("G.fst", b"\xd6\xfd\xb2\x7e\x07\x00\x00\x00vector", "{p}: not an ARPA text file (byte 0xd6 after line 0 is "
                                                         "not UTF-8; a binary file such as a G.fst? use --g_fst for those)"),
    ("fake.arpa.gz", b"just some text\n", "{p}: not an ARPA file (no \\data\\ counts or no 1-grams)"),
    ("counts.arpa", b"\\data\\\nngram 1=five\n", "{p}:2: expected 'ngram <k>=<count>', got 'ngram 1=five'"),
])
def test_a_file_that_is_no_arpa_text_is_one_line_naming_it(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert convert_lm.main(["--arpa", str(path), "--out", str(tmp_path / "st")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: " + expected.format(p=path)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_gzipped_arpa_is_read_whatever_its_suffix(tmp_path):
    path = tmp_path / "lm.arpa"  # gzip content, no .gz suffix (was a decode error)
    path.write_bytes(gzip.compress(MISSING_PREFIX_ARPA.encode()))
    assert convert_lm.main(["--arpa", str(path), "--out", str(tmp_path / "st")]) == 0
    assert (tmp_path / "st" / "vocab.txt").read_text().split() == ["</s>", "<s>", "a", "b", "c", "<unk>"]


def test_out_or_scratch_below_a_file_is_one_line_and_the_store_is_readable_by_others(tmp_path, capsys):
    """New-user cases: ``--out /etc/passwd/x`` was a FileExistsError traceback, ``--scratch <a file>`` a
    NotADirectoryError one; the finished store was mode 0700 (mkdtemp's), unreadable to another user's server."""
    import os
    import stat

    arpa = tmp_path / "lm.arpa"
    arpa.write_text(MISSING_PREFIX_ARPA)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert convert_lm.main(["--arpa", str(arpa), "--out", str(afile / "st")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --out {afile / 'st'}: {afile} is a file, not a folder; expected a writable folder")
    assert convert_lm.main(["--arpa", str(arpa), "--out", str(tmp_path / "st"), "--scratch", str(afile)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --scratch {afile}: is a file, not a folder; expected a folder (created if missing)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "lm.arpa"]
    old = os.umask(0o022)
    try:
        assert convert_lm.main(["--arpa", str(arpa), "--out", str(tmp_path / "st"), "--scratch",
                                str(tmp_path / "new" / "scratch")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "st").stat().st_mode) == 0o755
    assert (tmp_path / "new" / "scratch").is_dir() and not list((tmp_path / "new" / "scratch").iterdir())
