"""ARPA estimation: SRILM Good-Turing/Katz rules on a hand-computed example, normalisation of every
context for Katz / Kneser-Ney / cut-offs / pruning, ARPA round trip, and kaldilm accepting the file."""

from __future__ import annotations

import copy
import math
import random

import pytest

from language_model.ngram.arpa import BackoffLM, context_backoff_weights, read_arpa
from language_model.ngram.counts import count_ngrams
from language_model.ngram.katz import GoodTuring, estimate_katz
from language_model.ngram.kneser_ney import adjusted_counts, estimate_kn
from language_model.ngram.prune import prune_relative_entropy
from language_model.ngram.train import write_arpa_katz, write_arpa_kn


def zipf_corpus(n_sentences: int = 2000, vocab_size: int = 200, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    weights = [1.0 / (i + 1) for i in range(vocab_size)]
    sentences = [" ".join(rng.choices(vocab, weights, k=rng.randint(2, 10))) for _ in range(n_sentences)]
    return sentences, vocab


def max_normalisation_error(lm: BackoffLM, n_contexts: int = 40) -> float:
    """max |sum_w p(w|c) - 1| over the empty context and up to n_contexts contexts of every length."""
    events = [i for i, w in enumerate(lm.words) if w != "<s>"]
    contexts = [()]
    for k in range(lm.order - 1):
        contexts += sorted(lm.bows[k])[:n_contexts]
    assert len(contexts) > 1 or lm.order == 1
    return max(abs(sum(lm.prob(w, c) for w in events) - 1.0) for c in contexts)


def test_katz_matches_hand_computed_srilm_rules():
    # unigrams: a 3, b 3, c 1, </s> 4 (no count of 2 -> GT off for unigrams, no unigram discount)
    # bigrams: <s> a 3, <s> b 1, a b 2, a c 1, b </s> 3, c </s> 1 -> n1=3, n2=1, n3=2: gtmax lowered
    # to 2, d1 = (2/3 - 2)/(1 - 2) = 4/3 (SRILM keeps it: only r*/r > 1 is rejected), d2 -> 1.0
    counts = count_ngrams(["a b", "a b", "a c", "b"], 2, vocab=["a", "b", "c"], progress=False)
    lm = estimate_katz(counts)
    ids = lm.word_ids()
    a, b, c, s, e, unk = (ids[w] for w in ("a", "b", "c", "<s>", "</s>", "<unk>"))
    assert lm.probs[0][(a,)] == pytest.approx(3 / 11)
    assert lm.probs[0][(e,)] == pytest.approx(4 / 11)
    assert lm.probs[0][(s,)] == 0.0 and lm.probs[0][(unk,)] == 0.0
    # <s>: 3/4 + (4/3)/4 > 1 -> denominator incremented to 5 (the "Doug Paul" hack)
    assert lm.probs[1][(s, a)] == pytest.approx(3 / 5)
    assert lm.probs[1][(s, b)] == pytest.approx((4 / 3) / 5)
    assert lm.probs[1][(a, b)] == pytest.approx(2 / 4)
    assert lm.probs[1][(b, e)] == pytest.approx(3 / 4)
    bow_s = (1 - 3 / 5 - (4 / 3) / 5) / (1 - 6 / 11)
    assert lm.bows[0][(s,)] == pytest.approx(bow_s)
    assert lm.prob(c, [s]) == pytest.approx(bow_s * 1 / 11)
    assert max_normalisation_error(lm) < 1e-12


def test_good_turing_coefficients_and_fallbacks():
    from collections import Counter

    # n1=10, n2=4, n3=2: k=2, common = 3*2/10 = 0.6; d1 = (2*4/10 - 0.6)/0.4 = 0.5; d2 = (3*2/8 - 0.6)/0.4
    counts = Counter(
        {(10 + i,): 1 for i in range(10)} | {(100 + i,): 2 for i in range(4)} | {(200,): 3, (201,): 3}
    )
    gt = GoodTuring(min_count=1, max_count=2).estimate(counts)
    assert gt.coeffs[1] == pytest.approx(0.5)
    assert gt.coeffs[2] == pytest.approx((0.75 - 0.6) / 0.4)
    assert gt.discount(3) == 1.0
    assert GoodTuring(min_count=2, max_count=2).estimate(counts).discount(1) == 0.0
    # unigram default gtmax=1: Katz's formula gives 0 for singletons -> rejected -> 1.0
    assert GoodTuring(min_count=0, max_count=1).estimate(counts).coeffs[1] == 1.0


@pytest.mark.parametrize("estimator", [estimate_katz, estimate_kn])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(estimator, order):
    sentences, vocab = zipf_corpus()
    counts = count_ngrams(sentences, order, vocab=[*vocab, "never_seen"], progress=False)
    lm = estimator(counts)
    assert max_normalisation_error(lm) < 1e-9
    assert lm.probs[0][(lm.word_ids()["never_seen"],)] > 0.0  # zeroton mass (a count of 1 exists)


def test_arpa_round_trip_and_kaldilm_accepts_it(tmp_path):
    kaldilm = pytest.importorskip("kaldilm")
    kaldifst = pytest.importorskip("kaldifst")
    sentences, vocab = zipf_corpus(500)
    lm = write_arpa_katz(sentences, 3, tmp_path / "lm.arpa", vocab=vocab)
    text = (tmp_path / "lm.arpa").read_text()
    assert "-99\t<s>\t" in text and f"ngram 3={len(lm.probs[2])}" in text
    back = read_arpa(tmp_path / "lm.arpa")
    assert back.num_ngrams() == lm.num_ngrams()
    assert max_normalisation_error(back) < 1e-5  # 7 significant digits in the file
    sent = sentences[0].split()
    assert back.sentence_logprob(sent) == pytest.approx(lm.sentence_logprob(sent), abs=1e-4)
    kaldilm.arpa2fst(str(tmp_path / "lm.arpa"), str(tmp_path / "G.fst"), disambig_symbol="#0",
                     write_symbol_table=str(tmp_path / "words.txt"))  # fmt: skip
    g = kaldifst.StdVectorFst.read(str(tmp_path / "G.fst"))
    assert g.num_states > len(lm.probs[1])  # one state per history
    assert "#0" in (tmp_path / "words.txt").read_text()


def test_count_cutoffs_drop_rare_ngrams_and_stay_normalised(tmp_path):
    sentences, vocab = zipf_corpus()
    counts = count_ngrams(sentences, 3, vocab=vocab, progress=False)
    for estimator in (estimate_katz, estimate_kn):
        full = estimator(counts)
        cut = estimator(counts, min_counts=[1, 2, 3])
        assert all(counts.counts[2][g] >= 3 for g in cut.probs[2])
        assert all(counts.counts[1][g] >= 2 for g in cut.probs[1])
        assert len(cut.probs[2]) < len(full.probs[2]) / 3
        assert max_normalisation_error(cut) < 1e-9


def test_pruning_removes_ngrams_and_keeps_the_model_normalised():
    sentences, vocab = zipf_corpus(3000)
    counts = count_ngrams(sentences, 3, vocab=vocab, progress=False)
    sizes = []
    for threshold in (1e-7, 1e-6, 1e-5):
        lm = estimate_katz(counts)
        removed = prune_relative_entropy(lm, threshold)
        assert removed > 0 and max_normalisation_error(lm) < 1e-9
        sizes.append(sum(lm.num_ngrams()))
        for g in lm.probs[2]:  # contexts of kept trigrams stay explicit bigrams
            assert g[:-1] in lm.probs[1]
    assert sizes[0] > sizes[1] > sizes[2]


def test_pruning_criterion_is_the_exact_relative_entropy():
    """Bigram model: an n-gram is pruned iff exp(P(h) KL(p(.|h) || p'(.|h))) - 1 < threshold, where p'
    is the model without that one n-gram (backoff weight recomputed) -- computed here by brute force."""
    sentences, vocab = zipf_corpus(300, vocab_size=30, seed=1)
    lm = estimate_katz(count_ngrams(sentences, 2, vocab=vocab, progress=False))
    original = copy.deepcopy(lm)
    ids = lm.word_ids()
    events = [i for i in range(len(lm.words)) if i != ids["<s>"]]
    threshold = 2e-4
    prune_relative_entropy(lm, threshold)
    decisions = []
    for g in original.probs[1]:
        alt = copy.deepcopy(original)
        del alt.probs[1][g]
        alt.bows[0] = context_backoff_weights(alt, 1)
        h = g[:-1]
        kl = sum(original.prob(w, h) * math.log(original.prob(w, h) / alt.prob(w, h)) for w in events)
        p_h = original.prob(ids["</s>"] if h[0] == ids["<s>"] else h[0])
        decisions.append((math.expm1(p_h * kl) < threshold, g not in lm.probs[1]))
    assert all(expected == pruned for expected, pruned in decisions)
    assert 0 < sum(pruned for _, pruned in decisions) < len(decisions)


def test_kneser_ney_uses_continuation_counts():
    # "francisco" is frequent but only ever after "san": its lower-order count is 1
    sentences = ["san francisco"] * 20 + ["the cat", "a cat", "my cat", "big cat"] * 2
    counts = count_ngrams(sentences, 2, progress=False)
    ids = counts.word_id()
    adj = adjusted_counts(counts)
    assert adj[0][(ids["francisco"],)] == 1 and adj[0][(ids["cat"],)] == 4
    assert counts.counts[0][(ids["francisco"],)] == 20
    lm = estimate_kn(counts)
    assert lm.prob(ids["cat"]) > lm.prob(ids["francisco"])
    assert lm.prob(ids["francisco"], [ids["san"]]) > 0.9


def test_write_arpa_kn_and_katz_on_word_lists_and_errors(tmp_path):
    lm = write_arpa_kn([["i", "want", "to", "go"], ["i", "want", "two"]], 2, tmp_path / "kn.arpa")
    assert math.isclose(sum(lm.prob(i) for i in range(1, len(lm.words))), 1.0)
    with pytest.raises(ValueError, match="empty"):
        write_arpa_katz(["", "  "], 2, tmp_path / "e.arpa")
    with pytest.raises(ValueError, match="order"):
        write_arpa_katz(["a b"], 0, tmp_path / "e.arpa")


def test_denominator_hack_only_when_the_context_has_not_seen_every_word():
    from collections import Counter

    from language_model.ngram.katz import _discounted_probs

    gt = GoodTuring(min_count=0, max_count=1)
    gt.coeffs = {1: 1.0}  # no discount at all -> no backoff mass left
    counter = Counter({(5, 6): 2, (5, 7): 1})
    assert _discounted_probs(counter, gt, vocab_size=2) == {(5, 6): 2 / 3, (5, 7): 1 / 3}
    assert _discounted_probs(counter, gt, vocab_size=3) == {(5, 6): 2 / 4, (5, 7): 1 / 4}
