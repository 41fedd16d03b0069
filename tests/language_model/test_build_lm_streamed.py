"""build_lm.py --streamed / --first_pass_ngrams (issue 20): the same ARPA as the in-memory build, the full LM as
an n-gram store that scores like the ARPA, a first pass pruned to the n-gram budget, a killed build resumed
without recounting; and --vocab_file taking an LM folder's words.txt (issue 22 case 11)."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldilm")

from language_model import build_lm  # noqa: E402
from language_model.ngram import sorted_counts, streamed_build  # noqa: E402
from language_model.ngram.arpa import read_arpa  # noqa: E402
from language_model.ngram.store import NgramStore  # noqa: E402
from nejm_b2txt_utils.symbol_table import read_symbols  # noqa: E402
from tests.language_model.ngram.test_estimate_arrays import assert_same_arpa  # noqa: E402

WORDS = ("i want to go home we need now they have the store two dogs she has cats and cars it is too late that "
         "bad big my red car was very old").split()  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(1)
    weights = [1.0 / (i + 1) for i in range(len(WORDS))]
    lines = [" ".join(rng.choices(WORDS, weights, k=rng.randint(2, 9))) + "." for _ in range(1500)]
    lines += ["Zebras are big.", "Yellow cars.", "Yellow dogs."]  # a singleton and a doubleton word
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _argv(corpus, out, *extra):
    return ["--corpus", str(corpus), "--order", "3", "--vocab", "corpus", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    assert build_lm.main(_argv(corpus, root / "dict")) == 0
    assert build_lm.main(_argv(corpus, root / "streamed", "--streamed", "--chunk_tokens", "2000")) == 0
    return root


def test_streamed_build_writes_the_in_memory_builds_arpa_and_a_store(built):
    assert_same_arpa(built / "dict" / "lm.arpa", built / "streamed" / "lm.arpa")
    assert (built / "dict" / "words.txt").read_text() == (built / "streamed" / "words.txt").read_text()
    info = json.loads((built / "streamed" / "build_info.json").read_text())
    assert info["ngrams"] == info["ngrams_full"] == read_arpa(built / "dict" / "lm.arpa").num_ngrams()
    assert info["peak_rss_mb"] > 0 and set(info["stage_seconds"]) == {"count", "estimate", "store", "first_pass"}
    assert not (built / ".streamed.build").exists()  # the scratch folder goes once the folder is published
    lm = read_arpa(built / "dict" / "lm.arpa")
    store = NgramStore(built / "streamed" / "ngram_store")
    sentences = [["i", "want", "to", "go", "home"], ["yellow", "zebras"], ["my", "red", "car", "was", "old"]]
    got = store.score_sentences(sentences, nats=True)
    assert got.tolist() == pytest.approx([lm.sentence_logprob(s) for s in sentences], abs=1e-4)


def test_first_pass_is_pruned_to_the_budget_and_the_store_keeps_everything(corpus, built, tmp_path):
    out = tmp_path / "lm"
    assert build_lm.main(_argv(corpus, out, "--first_pass_ngrams", "300", "--keep_unpruned")) == 0
    info = json.loads((out / "build_info.json").read_text())
    full = read_arpa(built / "dict" / "lm.arpa").num_ngrams()
    pruned = read_arpa(out / "lm.arpa").num_ngrams()
    assert info["ngrams"] == pruned and sum(pruned) <= 300 and pruned[0] == full[0] and pruned[2] > 0
    assert info["ngrams_full"] == full and info["prune_threshold"] > 0
    assert NgramStore(out / "ngram_store").header["counts"] == full
    assert read_arpa(out / "lm_no_prune.arpa").num_ngrams() == full and (out / "G_no_prune.fst").is_file()


def _max_backoff_log10(arpa_path) -> float:
    """The largest backoff weight (log10) of an ARPA's lower orders."""
    order, top, best = 0, 0, -99.0
    for line in arpa_path.read_text().splitlines():
        if line.startswith("ngram "):
            top = max(top, int(line.split()[1].split("=")[0]))
        elif line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1])
        elif line and order and not line.startswith("\\"):
            fields = line.split()
            if order < top and len(fields) == order + 2:
                best = max(best, float(fields[-1]))
    return best


def test_a_first_pass_never_pays_for_back_off(corpus, tmp_path):
    """The 100M-token 4-gram's first pass (300k n-grams) had bow(the) = 10^1.76: in G.fst, whose back-off is an
    epsilon arc beside the explicit n-gram, inserting ``the`` before any word gained LM score, and the decode
    read ``the the the ...`` (WER 103 %). A pruned first pass now has every backoff weight <= 1; the store (the
    exact pass) keeps the full LM's, the unpruned ARPA too."""
    out = tmp_path / "lm"
    assert build_lm.main(_argv(corpus, out, "--first_pass_ngrams", "300", "--keep_unpruned")) == 0
    info = json.loads((out / "build_info.json").read_text())
    assert info["first_pass_backoffs_capped"] > 0  # this corpus has weights above 1 once pruned
    assert _max_backoff_log10(out / "lm.arpa") <= 0.0
    full = read_arpa(out / "lm_no_prune.arpa")
    store = NgramStore(out / "ngram_store")
    sentences = [["the", "the", "cars"], ["i", "want", "to", "go", "home"], ["dogs", "dogs", "dogs"]]
    got = store.score_sentences(sentences, nats=True)
    assert got.tolist() == pytest.approx([full.sentence_logprob(s) for s in sentences], abs=1e-4)


class Killed(BaseException):
    """What a SIGKILL leaves: nothing after the raise runs, and build_lm.main does not catch it."""


def test_a_killed_build_resumes_without_recounting(corpus, built, tmp_path, monkeypatch):
    out = tmp_path / "lm"

    def killed(*_a, **_k):
        raise Killed("during the estimation")

    monkeypatch.setattr(streamed_build, "estimate_katz_arrays", killed)
    with pytest.raises(Killed):
        build_lm.main(_argv(corpus, out, "--streamed", "--chunk_tokens", "2000"))
    assert not out.exists() and (tmp_path / ".lm.build" / "counts" / "3.json").is_file()
    monkeypatch.undo()
    monkeypatch.setattr(sorted_counts, "count_chunk", lambda *a: pytest.fail("counted again"))
    monkeypatch.setattr(build_lm, "normalized_sentences", lambda *a, **k: pytest.fail("normalised again"))
    assert build_lm.main(_argv(corpus, out, "--streamed", "--chunk_tokens", "2000")) == 0
    assert_same_arpa(built / "dict" / "lm.arpa", out / "lm.arpa")
    assert not (tmp_path / ".lm.build").exists()


def test_vocab_file_takes_an_lm_folders_words_txt(corpus, built, tmp_path):
    words_txt = built / "dict" / "words.txt"
    assert read_symbols(words_txt)[0] == "<eps>"  # the case of issue 22: '<eps>' on line 1
    out = tmp_path / "lm"
    assert build_lm.main(_argv(corpus, out, "--vocab_file", str(words_txt))) == 0
    assert words_txt.read_text() == (out / "words.txt").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (["--first_pass_ngrams", "100", "--prune", "1e-7"], "either --prune"),
    (["--streamed", "--mix_wordfreq"], "not streamed"),
    (["--first_pass_ngrams", "-1"], "--first_pass_ngrams must be >= 0"),
])
def test_bad_streamed_flags_are_one_line(corpus, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        build_lm.main(_argv(corpus, tmp_path / "lm", *extra))
    assert exc.value.code == 2 and message in capsys.readouterr().err
