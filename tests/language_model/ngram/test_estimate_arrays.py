"""The scalable path (sorted on-disk counts, Katz / modified KN / relative-entropy pruning over arrays) writes
the same ARPA values as the pure-Python dict estimators (their SRILM rules are tested in test_arpa.py), and a
killed count re-run resumes from the finished chunks."""

from __future__ import annotations

import random

import numpy as np
import pytest

from language_model.ngram.arpa import write_arpa
from language_model.ngram.array_lm import write_arpa_arrays
from language_model.ngram.counts import count_ngrams
from language_model.ngram.estimate_arrays import estimate_katz_arrays, estimate_kn_arrays
from language_model.ngram.katz import estimate_katz
from language_model.ngram.kneser_ney import estimate_kn
from language_model.ngram.prune import prune_relative_entropy
from language_model.ngram.prune_arrays import prune_to_size, prune_to_threshold
from language_model.ngram.sorted_counts import count_corpus, ids_to_keys, keys_to_ids

ESTIMATORS = {"katz": (estimate_katz, estimate_katz_arrays), "kn": (estimate_kn, estimate_kn_arrays)}


def zipf_sentences(n: int = 1500, vocab_size: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    weights = [1.0 / (i + 1) for i in range(vocab_size)]
    return [" ".join(rng.choices(vocab, weights, k=rng.randint(1, 10))) for _ in range(n)]


# a word seen once and one seen twice: Good-Turing stays on for unigrams, so SRILM's denominator increment leaves
# real unigram mass for the vocabulary word never seen
SENTENCES = [*zipf_sentences(), "once w1", "twice w2", "w3 twice"]
VOCAB = [f"w{i}" for i in range(150)] + ["once", "twice", "unseen"]  # 50 corpus words -> <unk>


def read_values(path) -> dict[str, tuple[float, float | None]]:
    """ARPA n-gram -> (log10 p, log10 bow or None)."""
    out, order = {}, 0
    for line in open(path, encoding="utf-8"):
        s = line.strip()
        if s.endswith("-grams:"):
            order = int(s[1:].split("-")[0])
        elif order and s and s != "\\end\\":
            f = s.split("\t")
            out[f[1]] = (float(f[0]), float(f[2]) if len(f) > 2 else None)
    return out


def assert_same_arpa(expected, got) -> None:
    a, b = read_values(expected), read_values(got)
    assert a.keys() == b.keys()
    assert [k for k in a if (a[k][1] is None) != (b[k][1] is None)] == []  # the same contexts have a bow
    for k in a:
        assert b[k][0] == pytest.approx(a[k][0], abs=2e-6), k
        assert (b[k][1] or 0.0) == pytest.approx(a[k][1] or 0.0, abs=2e-6), k


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Order-4 counts in many small chunks (several runs per order, merged in small blocks)."""
    work = tmp_path_factory.mktemp("counts")
    return {order: count_corpus(SENTENCES, order, VOCAB, work / str(order), chunk_tokens=2000, merge_block=300,
                                progress=False) for order in (2, 3, 4)}  # fmt: skip


def test_keys_sort_as_id_tuples_beyond_64_bits():
    ids = np.array([[300_000, 1, 2, 3], [2, 400_000, 0, 0], [2, 3, 4, 5], [300_000, 0, 9, 9]], np.uint32)
    keys = ids_to_keys(ids)
    assert keys_to_ids(np.sort(keys), 4).tolist() == sorted(ids.tolist())


def test_sorted_counts_equal_the_dict_counts(tables):
    words, counted, totals = tables[4]
    ref = count_ngrams(SENTENCES, 4, vocab=VOCAB, progress=False)
    assert words == ref.words
    assert totals == {"sentences": ref.n_sentences, "tokens": ref.n_tokens, "oov_tokens": ref.n_oov}
    for m in range(1, 5):
        got = dict(zip(map(tuple, keys_to_ids(counted[m - 1].keys(), m).tolist()), counted[m - 1].counts().tolist()))
        assert got == dict(ref.counts[m - 1])


@pytest.mark.parametrize("smoothing", ["katz", "kn"])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_array_estimators_write_the_dict_estimators_arpa(tables, tmp_path, smoothing, order):
    words, counted, _ = tables[order]
    ref, arrays = ESTIMATORS[smoothing]
    write_arpa(ref(count_ngrams(SENTENCES, order, vocab=VOCAB, progress=False)), tmp_path / "dict.arpa")
    write_arpa_arrays(arrays(counted, words), tmp_path / "arrays.arpa")
    assert_same_arpa(tmp_path / "dict.arpa", tmp_path / "arrays.arpa")


@pytest.mark.parametrize("smoothing,min_counts", [("katz", [0, 2, 3]), ("kn", [1, 2, 2])])
def test_count_cutoffs_match_too(tables, tmp_path, smoothing, min_counts):
    words, counted, _ = tables[3]
    ref, arrays = ESTIMATORS[smoothing]
    write_arpa(ref(count_ngrams(SENTENCES, 3, vocab=VOCAB, progress=False), min_counts=min_counts),
               tmp_path / "dict.arpa")  # fmt: skip
    write_arpa_arrays(arrays(counted, words, min_counts=min_counts), tmp_path / "arrays.arpa")
    assert_same_arpa(tmp_path / "dict.arpa", tmp_path / "arrays.arpa")


@pytest.mark.parametrize("smoothing,order,threshold", [("katz", 3, 1e-5), ("kn", 4, 1e-4), ("katz", 4, 1e-6)])
def test_pruning_keeps_what_prune_py_keeps(tables, tmp_path, smoothing, order, threshold):
    words, counted, _ = tables[order]
    ref, arrays = ESTIMATORS[smoothing]
    lm = ref(count_ngrams(SENTENCES, order, vocab=VOCAB, progress=False))
    removed = prune_relative_entropy(lm, threshold)
    write_arpa(lm, tmp_path / "dict.arpa")
    pruned = prune_to_threshold(arrays(counted, words), threshold)
    write_arpa_arrays(pruned, tmp_path / "arrays.arpa")
    assert removed > 1000
    assert_same_arpa(tmp_path / "dict.arpa", tmp_path / "arrays.arpa")


@pytest.mark.parametrize("budget", [156 + 3, 2000, 9000])
def test_pruning_to_a_size_budget(tables, budget):
    words, counted, _ = tables[4]
    full = estimate_katz_arrays(counted, words)
    pruned, threshold = prune_to_size(full, budget)
    total = sum(pruned.num_ngrams())
    assert budget - 20 <= total <= budget  # ties at the threshold are dropped, never over the budget
    assert pruned.num_ngrams()[0] == len(words) == 156
    # the chosen threshold is SRILM's -prune value for that size: pruning at it gives the same model
    if threshold > 0:
        again = prune_to_threshold(full, np.nextafter(threshold, np.inf))
        assert again.num_ngrams() == pruned.num_ngrams()
    assert prune_to_size(full, 10**9)[0] is full


def test_a_killed_count_resumes_from_finished_chunks(tmp_path, monkeypatch):
    from language_model.ngram import sorted_counts

    calls, alive = [], []
    real = sorted_counts.count_chunk

    def count_and_die(ids, order, *rest):
        calls.append(order)
        if len(calls) == 7 and not alive:  # the first run dies during the 3rd chunk (3 orders per chunk)
            alive.append(True)
            raise InterruptedError("killed")
        return real(ids, order, *rest)

    monkeypatch.setattr(sorted_counts, "count_chunk", count_and_die)
    with pytest.raises(InterruptedError):
        count_corpus(SENTENCES, 3, VOCAB, tmp_path, chunk_tokens=2000, progress=False)
    calls.clear()
    words, counted, _ = count_corpus(SENTENCES, 3, VOCAB, tmp_path, chunk_tokens=2000, progress=False)
    n_chunks = len(list((tmp_path / "runs" / "1").glob("*.json")))
    assert len(calls) == 3 * (n_chunks - 2)  # the first two chunks were not counted again
    ref = count_ngrams(SENTENCES, 3, vocab=VOCAB, progress=False)
    assert counted[2].size == len(ref.counts[2]) and int(counted[2].counts().sum()) == sum(ref.counts[2].values())


def test_lookups_in_small_blocks_give_the_same_model(tables, tmp_path, monkeypatch):
    from language_model.ngram import array_lm, estimate_arrays, prune_arrays

    words, counted, _ = tables[4]
    write_arpa_arrays(prune_to_threshold(estimate_kn_arrays(counted, words), 1e-5), tmp_path / "big_blocks.arpa")
    for module in (array_lm, estimate_arrays, prune_arrays):
        monkeypatch.setattr(module, "BLOCK", 1000)
    write_arpa_arrays(prune_to_threshold(estimate_kn_arrays(counted, words), 1e-5), tmp_path / "blocks.arpa")
    assert (tmp_path / "big_blocks.arpa").read_text() == (tmp_path / "blocks.arpa").read_text()


def test_byte_string_keys_give_the_same_model_as_uint64_codes(tmp_path, monkeypatch):
    """Vocabularies too large for uint64 codes (V**m > 2**64) sort and search the byte-string keys instead."""
    from language_model.ngram import array_lm, estimate_arrays, sorted_counts

    def build(name):
        words, counted, _ = count_corpus(SENTENCES, 4, VOCAB, tmp_path / name, chunk_tokens=2000, merge_block=300,
                                         progress=False)  # fmt: skip
        return write_arpa_arrays(prune_to_threshold(estimate_kn_arrays(counted, words), 1e-5), tmp_path / name / "a")

    codes = build("codes")
    for module in (array_lm, estimate_arrays, sorted_counts):
        monkeypatch.setattr(module, "codes_fit", lambda *_: False)
    assert build("bytes").read_text() == codes.read_text()
