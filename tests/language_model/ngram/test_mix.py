"""LM mixing: the static mixture is normalised, exact on explicit n-grams, and its weight minimises dev perplexity."""

from __future__ import annotations

import math

import pytest

from language_model.ngram.arpa import read_arpa, write_arpa
from language_model.ngram.counts import BOS, EOS
from language_model.ngram.mix import best_mix_weight, interpolate, mix_logprob
from language_model.ngram.train import write_arpa_katz
from language_model.ngram.unigram import wordfreq_unigram

CORPUS = ["i need water", "i need help", "please help me", "i want water", "i need some water",
          "please give me water", "i want to go home"] * 3
VOCAB = sorted({w for s in CORPUS for w in s.split()} | {"house", "garden", "yellow", "music"})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    ngram = write_arpa_katz(iter(CORPUS), 3, d / "ng.arpa", vocab=set(VOCAB))
    uni = wordfreq_unigram(VOCAB, eos_prob=0.1)
    return ngram, uni, d


def test_mixture_is_normalised_and_exact_on_explicit_ngrams(models):
    ngram, uni, d = models
    mix = interpolate(ngram, uni, 0.7)
    idx, i1, i2 = mix.word_ids(), ngram.word_ids(), uni.word_ids()
    targets = [w for w in mix.words if w != BOS]
    contexts = [(), ("i",), ("need",), ("i", "need"), ("please", "give"), (BOS,), ("yellow",)]
    for ctx in contexts:
        total = sum(mix.prob(idx[w], [idx[c] for c in ctx]) for w in targets)
        assert total == pytest.approx(1.0, abs=1e-9), ctx
    for words in [("i", "need", "water"), ("please", "help"), ("water",), ("garden",)]:
        ids = [idx[w] for w in words]
        want = 0.7 * ngram.prob(i1[words[-1]], [i1[w] for w in words[:-1]]) + 0.3 * uni.prob(i2[words[-1]])
        assert (*ids,) in mix.probs[len(words) - 1]  # explicit in the n-gram (or the 1-gram)
        assert mix.prob(ids[-1], ids[:-1]) == pytest.approx(want, rel=1e-9)
    # unseen words are no longer crushed: the n-gram's floor is lifted to ~30% of the 1-gram
    assert mix.prob(idx["garden"]) > 100 * ngram.prob(i1["garden"]) and mix.prob(idx["garden"]) > 0.2 * uni.prob(
        i2["garden"])
    back = read_arpa(write_arpa(mix, d / "mix.arpa"))  # one ARPA, readable again
    assert back.prob(back.word_ids()["water"], [back.word_ids()["need"]]) == pytest.approx(
        mix.prob(idx["water"], [idx["need"]]), rel=1e-4)
    with pytest.raises(ValueError, match="0, 1"):
        interpolate(ngram, uni, 1.0)


def test_weight_is_chosen_on_dev_perplexity(models):
    ngram, uni, _ = models
    in_domain = ["i need water", "please help me"]
    mixed_dev = ["i need water", "yellow music garden", "please help me", "house music"]
    lam, ppl = best_mix_weight(ngram, uni, in_domain)
    lam2, ppl2 = best_mix_weight(ngram, uni, mixed_dev)
    assert lam == max(ppl) and lam2 < lam  # in-domain dev wants the n-gram; unseen words pull towards the 1-gram
    assert ppl2[lam2] == min(ppl2.values()) and ppl2[lam2] < ppl2[0.99] / 2
    total, n = mix_logprob(ngram, uni, 0.5, ["i need water"])
    assert n == 4 and total == pytest.approx(sum(math.log(
        0.5 * ngram.prob(ngram.word_ids()[w], [ngram.word_ids()[c] for c in ctx])
        + 0.5 * uni.prob(uni.word_ids()[w]))
        for w, ctx in [("i", [BOS]), ("need", [BOS, "i"]), ("water", ["i", "need"]), (EOS, ["need", "water"])]))
