"""The memory-mapped n-gram store: written from per-order arrays, its scores equal the ARPA's (back-off paths,
unknown words, pruned models with inserted prefixes), and a damaged store is a one-line error."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from language_model.ngram.arpa import BackoffLM, read_arpa
from language_model.ngram.store import NgramStore, StoreError, check_store
from language_model.ngram.store_convert import ConvertError, arpa_to_store
from language_model.ngram.store_writer import write_store
from language_model.ngram.train import write_arpa_katz, write_arpa_kn


def zipf_sentences(n: int, vocab_size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    weights = [1.0 / (i + 1) for i in range(vocab_size)]
    return [" ".join(rng.choices(vocab, weights, k=rng.randint(2, 10))) for _ in range(n)]


def lm_arrays(lm: BackoffLM) -> tuple[list[str], list[dict]]:
    """The store arrays of a BackoffLM, in memory (the test's own small converter)."""
    words = list(lm.words)
    if "<unk>" not in words:
        words.append("<unk>")
    probs = [dict(p) for p in lm.probs]
    for k in range(lm.order - 1, 0, -1):  # every prefix stored, with its backed-off probability
        for ngram in list(probs[k]):
            if ngram[:-1] not in probs[k - 1]:
                probs[k - 1][ngram[:-1]] = lm.prob(ngram[-2], ngram[:-2])
    keys = [sorted(p) for p in probs]
    keys[0] = [(i,) for i in range(len(words))]
    orders = []
    for k in range(lm.order):
        log10 = [math.log10(probs[k][g]) if probs[k].get(g, 0.0) > 0 else -99.0 for g in keys[k]]
        arrays = {"word": np.array([g[-1] for g in keys[k]], dtype=np.uint32),
                  "logp": np.array(log10, dtype=np.float32)}
        if k < lm.order - 1:
            arrays["bow"] = np.array([math.log10(lm.bows[k].get(g, 1.0)) for g in keys[k]], dtype=np.float32)
            parents = {g: i for i, g in enumerate(keys[k])}
            n_children = np.bincount([parents[g[:-1]] for g in keys[k + 1]], minlength=len(keys[k]))
            arrays["child"] = np.concatenate([[0], np.cumsum(n_children)]).astype(np.int64)
        orders.append(arrays)
    return words, orders


def random_sentences(words: list[str], n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    pool = [w for w in words if w not in ("<s>", "</s>", "<unk>")] + ["oov1", "oov2"]
    return [rng.choices(pool, k=rng.randint(0, 12)) for _ in range(n)]


@pytest.mark.parametrize("order,prune,estimator", [(3, 0.0, write_arpa_katz), (4, 0.0, write_arpa_kn),
                                                    (3, 1e-4, write_arpa_kn), (4, 1e-4, write_arpa_katz)])
def test_store_scores_equal_arpa(tmp_path, order, prune, estimator):
    arpa = tmp_path / "lm.arpa"
    # a closed vocabulary of 50 of the 60 words: <unk> has a real probability (queries' unknown words map to it)
    estimator(zipf_sentences(600, 60, seed=order), order, arpa, prune=prune, vocab=[f"w{i}" for i in range(50)])
    lm = read_arpa(arpa)
    words, orders = lm_arrays(lm)
    write_store(tmp_path / "ngram_store", words, orders, source=str(arpa))
    store = NgramStore(tmp_path / "ngram_store")
    assert store.order == order and store.counts[0] == len(words)
    sentences = random_sentences(lm.words, 300, seed=1) + [[], ["w0"] * 15]
    got = store.score_sentences(sentences, nats=True)
    want = np.array([lm.sentence_logprob(s) for s in sentences])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    got_noeos = store.score_sentences(sentences[:50])
    want_noeos = np.array([lm.sentence_logprob(s, eos=False) for s in sentences[:50]]) / math.log(10)
    assert not np.allclose(got_noeos, store.score_sentences(sentences[:50], eos=False))
    np.testing.assert_allclose(store.score_sentences(sentences[:50], eos=False), want_noeos, rtol=1e-5, atol=1e-4)


def test_store_backoff_path_by_hand(tmp_path):
    # vocab <s> </s> <unk> a b; bigrams <s> a, a b; trigram <s> a b
    words = ["<s>", "</s>", "<unk>", "a", "b"]
    orders = [
        {"word": np.arange(5, dtype=np.uint32), "logp": np.array([-99, -1.0, -2.0, -0.5, -0.7], np.float32),
         "bow": np.array([-0.1, 0, 0, -0.2, -0.3], np.float32), "child": np.array([0, 1, 1, 1, 2, 2])},
        {"word": np.array([3, 4], np.uint32), "logp": np.array([-0.3, -0.4], np.float32),
         "bow": np.array([-0.05, -0.06], np.float32), "child": np.array([0, 1, 1])},
        {"word": np.array([4], np.uint32), "logp": np.array([-0.15], np.float32)},
    ]
    store = NgramStore(write_store(tmp_path / "s", words, orders))
    # <s> a b </s>: p(a|<s>) = -0.3; p(b|<s> a) = -0.15; p(</s>|a b): (a b) bow -0.06 + p(</s>|b) = bow(b) -0.3 + -1
    # <s> b a: p(b|<s>) = bow(<s>) -0.1 + -0.7; p(a|<s> b): no (<s> b) context -> p(a|b) = bow(b) -0.3 + -0.5
    # <s> zzz: no (<s> <unk>): bow(<s>) -0.1 + <unk> -2.0, then </s>: bow(<unk>) 0 + -1.0
    got = store.score_sentences([["a", "b"], ["b", "a"], ["zzz"]])
    np.testing.assert_allclose(got, [-0.3 - 0.15 - 0.06 - 0.3 - 1.0, -0.8 - 0.8 - 0.2 - 1.0, -3.1], atol=1e-6)


def test_corrupt_store_is_a_one_line_error(tmp_path):
    words = ["<s>", "</s>", "<unk>", "a"]
    orders = [{"word": np.arange(4, dtype=np.uint32), "logp": np.full(4, -0.5, np.float32),
               "child": np.array([0, 1, 1, 1, 2])},
              {"word": np.array([3, 1], np.uint32), "logp": np.array([-0.1, -0.2], np.float32)}]
    path = write_store(tmp_path / "s", words, orders)
    assert check_store(path, deep=True)["counts"] == [4, 2]
    with pytest.raises(StoreError, match="not above its sibling"):
        write_store(tmp_path / "t", words, [{**orders[0], "child": np.array([0, 2, 2, 2, 2])},
                                            {"word": np.array([3, 3], np.uint32), "logp": np.zeros(2, np.float32)}])
    with pytest.raises(StoreError, match=r"1\.child\.npy: offsets run 0\.\.1, expected 0\.\.2"):
        write_store(tmp_path / "u", words, [{**orders[0], "child": np.array([0, 1, 1, 1, 1])}, orders[1]])
    header = json.loads((path / "header.json").read_text())
    (path / "header.json").write_text(json.dumps({**header, "version": 7}))
    with pytest.raises(StoreError, match=r"header\.json: version 7, expected 1"):
        NgramStore(path)
    (path / "header.json").write_text(json.dumps(header))
    data = (path / "2.logp.npy").read_bytes()
    (path / "2.logp.npy").write_bytes(data[:-4])
    with pytest.raises(StoreError, match=r"2\.logp\.npy: \d+ bytes, expected \d+ \(truncated"):
        NgramStore(path)
    (path / "header.json").unlink()
    with pytest.raises(StoreError, match="header.json: missing"):
        NgramStore(path)


def shuffled_arpa(src, dst, seed: int) -> None:
    """The same ARPA with the n-grams of each section in random order (not trie order)."""
    rng = random.Random(seed)
    out, section = [], []
    for line in src.read_text().splitlines():
        if line.strip() and not line.startswith("\\") and not line.startswith("ngram "):
            section.append(line)
            continue
        rng.shuffle(section)
        out += section + [line]
        section = []
    dst.write_text("\n".join(out) + "\n")


@pytest.mark.parametrize("order,prune,estimator,shuffle", [(3, 0.0, write_arpa_katz, False),
                                                            (4, 1e-4, write_arpa_kn, True)])
def test_arpa_to_store_streams_an_arpa_to_the_same_scores(tmp_path, order, prune, estimator, shuffle):
    arpa = tmp_path / "lm.arpa"
    estimator(zipf_sentences(600, 60, seed=order), order, arpa, prune=prune, vocab=[f"w{i}" for i in range(50)])
    if shuffle:
        shuffled_arpa(arpa, tmp_path / "shuffled.arpa", seed=3)
        arpa = tmp_path / "shuffled.arpa"
    lm = read_arpa(arpa)
    store = NgramStore(arpa_to_store(arpa, tmp_path / "ngram_store"))
    check_store(store.path, deep=True)
    assert store.counts == lm.num_ngrams()
    sentences = random_sentences(lm.words, 300, seed=2)
    np.testing.assert_allclose(store.score_sentences(sentences, nats=True),
                               [lm.sentence_logprob(s) for s in sentences], rtol=1e-5, atol=1e-4)
    assert not list(tmp_path.glob(".ngram_convert.*"))  # the scratch folder is gone


MISSING_PREFIX_ARPA = """\\data\\
ngram 1=5
ngram 2=2
ngram 3=2

\\1-grams:
-1.0 </s>
-99 <s> -0.1
-0.5 a -0.2
-0.7 b -0.3
-0.9 c

\\2-grams:
-0.4 a b -0.05
-0.6 b c

\\3-grams:
-0.15 <s> a b
-0.25 a b c

\\end\\
"""


def test_missing_prefix_is_inserted_with_its_backed_off_score(tmp_path):
    (tmp_path / "lm.arpa").write_text(MISSING_PREFIX_ARPA)
    store = NgramStore(arpa_to_store(tmp_path / "lm.arpa", tmp_path / "s"))
    assert store.counts == [6, 3, 2] and "<unk>" in store.vocab and "-99" in store.header["source"]
    entry = store.find(store.ids(["<s>", "a"])[None, :])[0]
    assert entry >= 0 and store.logp[2][entry] == pytest.approx(-0.1 - 0.5) and store.bow[2][entry] == 0.0
    lm = read_arpa(tmp_path / "lm.arpa")
    sentences = [["a", "b", "c"], ["b", "c"], ["a", "b"], ["c", "a", "b", "c"]]
    np.testing.assert_allclose(store.score_sentences(sentences, nats=True),
                               [lm.sentence_logprob(s) for s in sentences], atol=1e-5)
    # <s> a b c: (<s> a) inserted: -0.6; (<s> a b) -0.15; (a b c) -0.25; (b c </s>): bow(b c) 0 + bow(c) 0 + -1.0
    assert store.score_sentences([["a", "b", "c"]])[0] == pytest.approx(-0.6 - 0.15 - 0.25 - 1.0, abs=1e-6)


def test_bad_arpa_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text(MISSING_PREFIX_ARPA.replace("-0.6 b c", "-0.6 b zz"))
    with pytest.raises(ConvertError, match=r"bad\.arpa:15: word 'zz' is not among the 1-grams"):
        arpa_to_store(bad, tmp_path / "s")
    bad.write_text(MISSING_PREFIX_ARPA.replace("ngram 3=2", "ngram 3=3"))
    with pytest.raises(ConvertError, match=r"2 3-grams, the \\data\\ header declares 3"):
        arpa_to_store(bad, tmp_path / "s")
    assert not (tmp_path / "s" / "header.json").exists()


@pytest.mark.parametrize("old, new, message", [
    ("-0.6 b c", "nan b c", r"bad\.arpa:15: log10 p 'nan': expected a finite number <= 0"),
    ("-0.6 b c", "inf b c", r"bad\.arpa:15: log10 p 'inf': expected a finite number <= 0"),
    ("-0.6 b c", "0.6 b c", r"bad\.arpa:15: log10 p '0.6': expected a finite number <= 0"),
    ("-0.6 b c", "abc b c", r"bad\.arpa:15: log10 p 'abc' is not a number"),
    ("-0.4 a b -0.05", "-0.4 a b nan", r"bad\.arpa:14: backoff 'nan': expected a finite number"),
])
def test_arpa_values_that_are_no_probabilities_are_refused(tmp_path, old, new, message):
    """New-user case: NaN, inf and positive log-probs were converted silently (the server then scored with NaN)."""
    bad = tmp_path / "bad.arpa"
    bad.write_text(MISSING_PREFIX_ARPA.replace(old, new))
    with pytest.raises(ConvertError, match=message):
        arpa_to_store(bad, tmp_path / "s")
    assert not (tmp_path / "s" / "header.json").exists()


def test_convert_cli_names_a_missing_source_and_a_file_as_out(tmp_path, capsys):
    from language_model import convert_lm

    arpa = tmp_path / "ok.arpa"
    arpa.write_text(MISSING_PREFIX_ARPA)
    (tmp_path / "afile").write_text("x")
    assert convert_lm.main(["--arpa", str(arpa), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert convert_lm.main(["--g_fst", str(tmp_path / "nope.fst"), "--out", str(tmp_path / "s")]) == 2
    assert f"{tmp_path / 'nope.fst'}: not found" in capsys.readouterr().err


def test_a_store_of_another_lm_is_refused_and_small_differences_are_warned(tmp_path, caplog):
    """New-user case: a 126k-word store copied into a 33-word LM folder (and one with a word renamed) served
    silently, scoring the folder's words as <unk>."""
    from language_model.decoding.ngram_rescore import check_store_vocabulary

    words = ["<eps>", "!SIL", *[f"w{i}" for i in range(200)], "#0", "<s>", "</s>"]
    check_store_vocabulary(tmp_path, ["<s>", "</s>", "<unk>", *[f"w{i}" for i in range(200)]], words)
    with pytest.raises(StoreError, match=r"vocab\.txt: 1000 words, of which 800 are not in words\.txt"):
        check_store_vocabulary(tmp_path, [f"w{i}" for i in range(1000)], words)
    with pytest.raises(StoreError, match=r"which has 3 of its 201 words missing here \(e\.g\. '!SIL'\)"):
        check_store_vocabulary(tmp_path, [f"w{i}" for i in range(2, 200)] + ["zz"], words)
    with caplog.at_level("WARNING"):
        check_store_vocabulary(tmp_path, [f"w{i}" for i in range(1, 200)] + ["!SIL"], words)
    assert "1 words of words.txt are not in the store (they score as <unk>, e.g. 'w0')" in caplog.text
