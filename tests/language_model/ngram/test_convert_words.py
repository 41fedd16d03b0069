"""convert_lm.py --g_fst with a --words of another LM: a same-size words.txt with the words shuffled converted
silently into a wrong store (now a warning naming both files); a fully shuffled one blamed only the FST (now the
message says a --words of another LM can cause it). An interrupted G.fst conversion leaves no --out."""

from __future__ import annotations

import logging
import random

import pytest

pytest.importorskip("kaldilm")

import language_model.ngram.store_writer as store_writer  # noqa: E402
from language_model import convert_lm  # noqa: E402
from tests.language_model._store_testing import build_original_layout_lm  # noqa: E402

SPECIAL = {"<eps>", "!SIL", "<s>", "</s>", "<unk>", "#0"}


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return build_original_layout_lm(tmp_path_factory.mktemp("lm") / "o3", order=3)


def _shuffled_words(lm_dir, dst, only_words: bool):
    """words.txt with the same ids and a permutation of the symbols (ordinary words only, or all of them)."""
    pairs = [line.split() for line in (lm_dir / "words.txt").read_text().splitlines()]
    movable = [i for i, (w, _) in enumerate(pairs) if not only_words or w not in SPECIAL]
    symbols = [pairs[i][0] for i in movable]
    random.Random(0).shuffle(symbols)
    for i, w in zip(movable, symbols):
        pairs[i][0] = w
    dst.write_text("".join(f"{w} {i}\n" for w, i in pairs))
    return dst


def test_words_of_another_lm_with_the_same_size_is_warned(lm_dir, tmp_path, caplog):
    words = _shuffled_words(lm_dir, tmp_path / "words.txt", only_words=True)
    with caplog.at_level(logging.WARNING, logger="convert_lm"):
        assert convert_lm.main(["--g_fst", str(lm_dir / "G_no_prune.fst"), "--words", str(words),
                                "--out", str(tmp_path / "st")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"--words {words} differs from {lm_dir / 'words.txt'} beside the FST: if it is another LM's "
                        "words.txt the store's words are wrong (a grammar's labels only mean something with its own "
                        "words.txt)"]
    caplog.clear()
    same = tmp_path / "copy_words.txt"  # an identical copy elsewhere: no warning
    same.write_bytes((lm_dir / "words.txt").read_bytes())
    with caplog.at_level(logging.WARNING, logger="convert_lm"):
        assert convert_lm.main(["--g_fst", str(lm_dir / "G_no_prune.fst"), "--words", str(same),
                                "--out", str(tmp_path / "st2")]) == 0
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_fully_shuffled_words_error_names_the_words_file(lm_dir, tmp_path, capsys):
    words = _shuffled_words(lm_dir, tmp_path / "other_words.txt", only_words=False)
    assert convert_lm.main(["--g_fst", str(lm_dir / "G_no_prune.fst"), "--words", str(words),
                            "--out", str(tmp_path / "st")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {lm_dir / 'G_no_prune.fst'}: ")
    assert err.endswith(f"(or --words {words} is not the words.txt of this FST's LM: a --words of another LM "
                        "causes this)")
    assert not (tmp_path / "st").exists()


def test_interrupted_g_fst_conversion_leaves_no_out_folder(lm_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(store_writer, "check_arrays", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert convert_lm.main(["--g_fst", str(lm_dir / "G_no_prune.fst"), "--out", str(tmp_path / "st")]) == 130
    assert list(tmp_path.iterdir()) == []
