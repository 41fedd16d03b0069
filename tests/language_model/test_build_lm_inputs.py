"""build_lm.py on bad input (issue 13 cases 3 and 6): inputs checked before the expensive estimation, one-line
errors with exit 2, a non-UTF-8 corpus line never becomes a changed word, and an interrupted build never
leaves a folder that looks complete."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldilm")

from language_model import build_lm  # noqa: E402
from language_model.graph import tlg  # noqa: E402
from nejm_b2txt_utils.symbol_table import read_symbols  # noqa: E402

TEXT = "I want to go home. We need to go now. They want to go to the store.\n" * 3
LATIN1_LINE = "The caf\u00e9 opens at noon.\n".encode("latin-1")


def _argv(corpus, out, *extra):
    return ["--corpus", str(corpus), "--order", "2", "--vocab", "corpus", "--out", str(out), *extra]


def _words(out) -> set[str]:
    return set(read_symbols(out / "words.txt").values())


@pytest.fixture
def no_estimation(monkeypatch):
    """Fail if the corpus pass or the n-gram estimation starts (the input checks must come first)."""
    def fail(*_a, **_k):
        raise AssertionError("the build started before its inputs were checked")
    for name in ("normalized_sentences", "write_arpa_katz", "write_arpa_kn"):
        monkeypatch.setattr(build_lm, name, fail)


def test_latin1_line_is_skipped_with_a_warning_never_a_changed_word(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT.encode() + LATIN1_LINE + b"The store opens at noon.\n")
    caplog.set_level(logging.WARNING)
    assert build_lm.main(_argv(corpus, tmp_path / "lm")) == 0
    words = _words(tmp_path / "lm")
    assert {"store", "opens", "noon"} <= words and not {"caf", "cafe", "caf\u00e9"} & words
    warnings = [r.getMessage() for r in caplog.records if r.name == "language_model.ngram.corpus"]
    assert warnings == [f"{corpus}: 1 line(s) are not valid utf-8 and were skipped (first: line 4); "
                        "give --encoding if the file uses another one"]
    assert json.loads((tmp_path / "lm" / "build_info.json").read_text())["undecodable_lines"] == 1


def test_encoding_option_reads_the_latin1_word(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt.gz"
    with gzip.open(corpus, "wb") as f:
        f.write(TEXT.encode() + LATIN1_LINE)
    caplog.set_level(logging.WARNING)
    assert build_lm.main(_argv(corpus, tmp_path / "lm", "--encoding", "latin-1")) == 0
    words = _words(tmp_path / "lm")
    assert "cafe" in words and "caf" not in words  # accents folded: the CMU word 'cafe'
    assert not [r for r in caplog.records if r.name == "language_model.ngram.corpus"]


@pytest.mark.parametrize(("content", "expected"), [
    (b"want\nto\ngo\xe9\n", "{vocab}:3: not valid utf-8 text"),
    (b"\n  \n", "{vocab}: no words"),
    (b"want\n<s>\n", "{vocab}:2: '<s>' is a reserved symbol"),
])
def test_bad_vocab_file_is_reported_before_the_build(tmp_path, capsys, no_estimation, content, expected):
    corpus, vocab = tmp_path / "corpus.txt", tmp_path / "vocab.txt"
    corpus.write_text(TEXT)
    vocab.write_bytes(content)
    assert build_lm.main(_argv(corpus, tmp_path / "lm", "--vocab_file", str(vocab))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {expected.format(vocab=vocab)}"), err
    assert not (tmp_path / "lm").exists()


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("corpus.gz", b"plain text, not gzip\n", "cannot read the corpus (Not a gzipped file"),
    ("corpus.txt", b"", "the corpus file is empty"),
])
def test_unreadable_corpus_is_reported_before_the_build(tmp_path, capsys, no_estimation, name, content, expected):
    corpus = tmp_path / name
    corpus.write_bytes(content)
    assert build_lm.main(_argv(corpus, tmp_path / "lm")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {corpus}") and expected in err[-1], err


def test_unknown_encoding_is_a_flag_error(tmp_path, capsys):
    (tmp_path / "c.txt").write_text(TEXT)
    with pytest.raises(SystemExit) as exc:
        build_lm.main(_argv(tmp_path / "c.txt", tmp_path / "lm", "--encoding", "klingon-8"))
    assert exc.value.code == 2 and "--encoding: unknown encoding 'klingon-8'" in capsys.readouterr().err


def test_corpus_without_pronounceable_words_stops_before_estimation(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    monkeypatch.setattr(build_lm, "lexicon_for_words", lambda words, *a, **k: {})
    for name in ("write_arpa_katz", "write_arpa_kn"):
        monkeypatch.setattr(build_lm, name, lambda *a, **k: pytest.fail("estimation ran"))
    assert build_lm.main(_argv(corpus, tmp_path / "lm")) == 2
    assert "no word has a pronunciation" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["estimation", "graph", "build_info"])
def test_interrupted_build_never_looks_complete(tmp_path, monkeypatch, capsys, where):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "lm"
    assert build_lm.main(_argv(corpus, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt
    target = {"estimation": (build_lm, "write_arpa_katz"), "graph": (tlg, "compose_tlg"),
              "build_info": (build_lm, "atomic_write_json")}[where]
    monkeypatch.setattr(*target, interrupt)
    corpus.write_text(TEXT + "The store opens at noon.\n")  # new inputs: a rebuild
    assert build_lm.main(_argv(corpus, out)) == 130  # Ctrl-C: one line, exit 130 (was a traceback)
    assert "interrupted (Ctrl-C); run the same command again to resume" in capsys.readouterr().err
    # the previous, complete folder is untouched (its build_info.json still names the old inputs)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "lm"]  # no half-built folder left
    monkeypatch.undo()
    assert build_lm.main(_argv(corpus, out)) == 0 and "noon" in _words(out)
