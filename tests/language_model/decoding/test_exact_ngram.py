"""Exact n-gram scores: G's backoff epsilons can beat the ARPA; finalize swaps in the ARPA's own score."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("kaldilm")

from language_model.decoding.ngram_rescore import GrammarFst, exact_rescore  # noqa: E402
from language_model.graph.grammar_fst import arpa_to_g  # noqa: E402
from language_model.graph.tlg import build_lm_dir, word_symbols  # noqa: E402
from language_model.graph.toy_lm import TOY_LEXICON, synthetic_logits  # noqa: E402
from language_model.ngram.arpa import read_arpa  # noqa: E402
from nejm_b2txt_utils.hypothesis import Hypothesis  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402
from nejm_b2txt_utils.symbol_table import write_symbols  # noqa: E402

# "i" backs off with weight 10^0.8 > 1, so "i -> backoff -> need" (0.8 - 0.6 = +0.2) beats the explicit
# "i need" (-2.0): the ARPA gives log10 P("<s> i need water </s>") = -0.3 - 2.0 - 0.2 - 1.0 = -3.5,
# the cheapest path through G -0.3 + 0.2 - 0.2 - 1.0 = -1.3.
ARPA = """\\data\\
ngram 1=6
ngram 2=3

\\1-grams:
-1.0 </s>
-99 <s> 0.0
-0.5 i 0.8
-0.6 need 0.0
-0.7 water 0.0
-0.9 now 0.0

\\2-grams:
-0.3 <s> i
-2.0 i need
-0.2 need water

\\end\\
"""
WORDS = ["i", "need", "water", "now"]
LN10 = math.log(10)


@pytest.fixture(scope="module")
def grammar(tmp_path_factory):
    d = tmp_path_factory.mktemp("g")
    (d / "lm.arpa").write_text(ARPA)
    write_symbols(word_symbols(WORDS), d / "words.txt")
    arpa_to_g(d / "lm.arpa", d / "words.txt", d / "G.fst")
    ids = {w: i for i, w in enumerate(word_symbols(WORDS))}
    return GrammarFst(d / "G.fst", ids["#0"]), ids, d


def test_exact_cost_is_the_arpa_and_never_below_the_best_path(grammar):
    g, ids, d = grammar
    arpa = read_arpa(d / "lm.arpa")
    for sent, exact_log10, best_log10 in [("i need water", -3.5, -1.3), ("i need", -0.3 - 2.0 - 1.0, None),
                                          ("need water now", -0.6 - 0.2 - 0.9 - 1.0, None)]:
        w = [ids[x] for x in sent.split()]
        assert g.exact_cost(w) == pytest.approx(-exact_log10 * LN10, abs=1e-4)
        assert -g.exact_cost(w) == pytest.approx(arpa.sentence_logprob(sent.split()), abs=1e-4)
        assert g.cost(w) <= g.exact_cost(w) + 1e-9
        if best_log10 is not None:
            assert g.cost(w) == pytest.approx(-best_log10 * LN10, abs=1e-4)
    assert math.isinf(g.exact_cost([ids["i"], 999]))


def test_exact_rescore_lowers_only_the_optimistic_sentences(grammar):
    g, ids, _ = grammar
    a = Hypothesis("i need water", -10.0, -3.0, words=tuple(ids[x] for x in "i need water".split()))
    b = Hypothesis("need water now", -12.0, -4.6, words=tuple(ids[x] for x in "need water now".split()))
    out = exact_rescore(g, [a, b], acoustic_scale=0.5)
    assert [h.sentence for h in out] == ["need water now", "i need water"]  # the winner changes
    assert out[1].lm == pytest.approx(-3.0 - 2.2 * LN10, abs=1e-4) and out[0].lm == pytest.approx(-4.6, abs=1e-6)
    assert out[1].total == pytest.approx(0.5 * -10.0 + out[1].lm)


@pytest.mark.parametrize("exact", [0, 1])
def test_finalize_reports_the_arpa_score_with_exact_ngram(tmp_path, grammar, exact):
    from language_model.serving.service import LMService

    _, _, d = grammar
    lm = build_lm_dir({w: TOY_LEXICON[w] for w in WORDS}, d / "lm.arpa", tmp_path / "lm", sil_prob=0.0)
    params = LMParams(acoustic_scale=0.5, blank_penalty=1.0, nbest=10, exact_ngram=exact, gpu_number=-1)
    svc = LMService(str(lm), params=params)
    svc.ensure_components(params)
    dec = svc.new_decoder(params)
    dec.accept_logits(synthetic_logits("i need water", seed=0, lexicon={w: TOY_LEXICON[w] for w in WORDS}))
    result = svc.finalize(dec, params)
    top = next(c for c in result.candidates if c.sentence == "i need water")
    # without silence the graph's LM cost is G's alone: the search's best path, or the ARPA's exact score
    assert top.lm == pytest.approx((-3.5 if exact else -1.3) * LN10, abs=1e-3)


def test_large_states_searched_by_label_give_the_same_costs(grammar, monkeypatch):
    """States with more than _BIG_STATE arcs (the unigram state of a real G: 126k) are binary-searched per label
    instead of read whole; with the threshold at 0 every state is, and every cost is the same."""
    import itertools

    import language_model.decoding.ngram_rescore as nr

    _, ids, d = grammar
    seqs = [[ids[w] for w in s] for n in (1, 2, 3) for s in itertools.product(WORDS, repeat=n)] + [[ids["i"], 999]]
    whole = GrammarFst(d / "G.fst", ids["#0"])
    ref = [(whole.cost(s), whole.exact_cost(s)) for s in seqs]
    monkeypatch.setattr(nr, "_BIG_STATE", 0)
    searched = GrammarFst(d / "G.fst", ids["#0"])
    assert searched._ilabel_sorted
    assert [(searched.cost(s), searched.exact_cost(s)) for s in seqs] == ref
    assert all(isinstance(v[0], nr._SortedArcs) for v in searched._cache.values())
    assert math.isfinite(ref[0][1]) and math.isinf(ref[-1][1])
