"""Exact n-best pruning of the causal-LM rescoring, KV-cached rounds, ``llm_dtype`` and the two table rows."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from language_model.decoding import llm_rescore  # noqa: E402
from language_model.decoding.llm_rescore import CausalLMScorer, rescore_nbest, resolve_dtype  # noqa: E402
from language_model.decoding.prefix_tree import (  # noqa: E402
    TreeForward,
    build_prefix_tree,
    pruned_tree_scores,
    tree_token_logprobs,
)
from nejm_b2txt_utils.hypothesis import Hypothesis  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParamError, LMParams  # noqa: E402
from tests.language_model._lm_testing import TOY_LEXICON, make_tiny_causal_lm  # noqa: E402

WORDS = sorted(TOY_LEXICON)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return CausalLMScorer.load(str(make_tiny_causal_lm(tmp_path_factory.mktemp("lm") / "tiny")), dtype="float32")


def random_nbest(rng: np.random.Generator, n: int) -> list[str]:
    """An n-best-like list: variants of one sentence with a word or two swapped, some of other lengths."""
    ref = list(rng.choice(WORDS, size=int(rng.integers(3, 8))))
    out = []
    for _ in range(n):
        s = list(ref)
        for _ in range(int(rng.integers(1, 3))):
            s[int(rng.integers(len(s)))] = str(rng.choice(WORDS))
        if rng.random() < 0.2:
            s = s[: int(rng.integers(1, len(s) + 1))]
        out.append(" ".join(s))
    return out


def test_rounds_with_a_kv_cache_and_padding_equal_one_pass(scorer):
    rows = scorer._rows(random_nbest(np.random.default_rng(0), 30))
    tree = build_prefix_tree(rows)
    full = np.array(tree_token_logprobs(scorer.model, tree))
    fwd = TreeForward(scorer.model, tree)
    fwd.pad_multiple = 7  # the bfloat16 padding, exercised in float32
    half = np.arange(len(tree.tokens) // 2)  # ids are parents-first: a prefix of them is a valid round
    fwd.evaluate(half)
    partial, complete = fwd.sums()
    assert 0 < complete.sum() < len(rows) and np.all(partial[~complete] > full[~complete] - 1e-6)
    fwd.evaluate(np.arange(len(tree.tokens)))
    partial, complete = fwd.sums()
    assert complete.all() and fwd.n_forwards == 2 and len(fwd.kv_nodes) % 7 == 0
    np.testing.assert_allclose(partial, full, atol=1e-4)
    with pytest.raises(ValueError, match="before its parent"):
        TreeForward(scorer.model, tree).evaluate(np.array([len(tree.tokens) - 1]))


@pytest.mark.parametrize("seed", range(12))
def test_pruned_best_is_the_full_scorings_best(scorer, seed):
    rng = np.random.default_rng(seed)
    rows = scorer._rows(random_nbest(rng, int(rng.integers(5, 60))))
    tree = build_prefix_tree(rows)
    base = rng.normal(0, [1.0, 5.0, 20.0][seed % 3], len(rows))
    weight = [0.55, 1.0, 0.1, 0.0][seed % 4]
    lp = [0.0, 0.7, -0.5][seed % 3]  # a negative length penalty: a bonus per token, known from the count
    offset = -lp * np.array([len(r) for r in rows])
    full = np.array(tree_token_logprobs(scorer.model, tree)) + offset
    total = base + weight * full
    score, exact, fwd = pruned_tree_scores(scorer.model, tree, base, weight, offset, first_round=1 + seed % 3)
    pruned_total = base + weight * score
    assert int(np.argmax(pruned_total)) == int(np.argmax(total))
    np.testing.assert_allclose(score[exact], full[exact], atol=1e-4)
    assert np.all(score[~exact] >= full[~exact] - 1e-6)  # a dropped candidate reports an upper bound ...
    assert np.all(pruned_total[~exact] < total.max())  # ... whose total is below the best
    assert fwd.evaluated.sum() <= len(tree.tokens)


def test_pruning_drops_candidates_on_a_spread_nbest(scorer):
    """Real numbers: 40 candidates whose non-LLM parts differ by up to 100 nats, alpha 0.5."""
    rng = np.random.default_rng(7)
    texts = random_nbest(rng, 40)
    nbest = [Hypothesis(t, -2.5 * i, -1.0 * i) for i, t in enumerate(texts)]
    best_full, rows_full = rescore_nbest(scorer, nbest, 1.0, 0.5, length_penalty=0.3)
    best, rows = rescore_nbest(scorer, nbest, 1.0, 0.5, length_penalty=0.3, prune=True)
    assert best == best_full
    exact = scorer.last_exact
    assert scorer.last_stats["scored"] == exact.sum() < 40 and scorer.last_stats["forwards"] in (1, 2)
    assert scorer.last_stats["nodes_evaluated"] < scorer.last_stats["nodes"]
    best_total = max(r.total for r in rows_full)
    for r, f, e in zip(rows, rows_full, exact):
        assert (r.sentence, r.ac, r.lm) == (f.sentence, f.ac, f.lm)
        assert r.total == pytest.approx(1.0 * r.ac + 0.5 * r.lm + 0.5 * r.llm, abs=1e-9)
        if e:
            assert r.llm == pytest.approx(f.llm, abs=1e-4)
        else:  # dropped: llm is the bound that dropped it, the total stays below the best
            assert r.llm >= f.llm - 1e-6 and r.total < best_total
    assert max(rows, key=lambda r: r.total).sentence == best_full
    scorer.method = "batch"  # pruning needs the tree; the padded batch scores every candidate
    try:
        assert rescore_nbest(scorer, nbest, 1.0, 0.5, 0.3, prune=True)[0] == best_full and scorer.last_exact.all()
    finally:
        scorer.method = "tree"


def test_alpha_zero_scores_only_the_first_round(scorer):
    texts = random_nbest(np.random.default_rng(3), 20)
    nbest = [Hypothesis(t, -float(i), -float(i)) for i, t in enumerate(texts)]
    best, rows = rescore_nbest(scorer, nbest, 0.3, 0.0, prune=True)
    assert best == texts[0] and scorer.last_stats["forwards"] == 1
    k = llm_rescore.PRUNE_FIRST_ROUND  # the top k by the non-LLM part, plus any that round 1 covered fully
    assert scorer.last_exact[:k].all() and not scorer.last_exact.all()
    assert all(r.total < rows[0].total for r, e in zip(rows, scorer.last_exact) if not e)


def test_dtype_choice(monkeypatch, tmp_path, scorer):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx512f amx_tile amx_bf16\n")
    assert llm_rescore.cpu_has_fast_bf16(str(cpuinfo))
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert not llm_rescore.cpu_has_fast_bf16(str(cpuinfo)) and not llm_rescore.cpu_has_fast_bf16(str(tmp_path / "x"))
    assert resolve_dtype("auto", "cuda:0") == torch.float16
    monkeypatch.setattr(llm_rescore, "cpu_has_fast_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(llm_rescore, "cpu_has_fast_bf16", lambda: False)
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="llm_dtype='int4'"):
        resolve_dtype("int4", "cpu")
    bf16 = CausalLMScorer(scorer.model.to(torch.bfloat16), scorer.tok)  # padded rounds, float32 log-softmax
    try:
        texts = random_nbest(np.random.default_rng(1), 25)
        got = bf16.score(texts)
    finally:
        scorer.model.to(torch.float32)
    np.testing.assert_allclose(got, scorer.score(texts), atol=0.1)


def test_table_rows_and_one_line_errors(capsys):
    pytest.importorskip("kaldifst")
    from language_model.serving.args import parse_args

    assert (LMParams().llm_prune, LMParams().llm_dtype) == (0, "auto")
    with pytest.raises(LMParamError, match=r"llm_prune=2: expected a whole number in \[0, 1\]"):
        LMParams(llm_prune=2)
    for flag, msg in (("--llm_prune=2", "--llm_prune='2': expected a whole number in [0, 1]"),
                      ("--llm_dtype=int8", "--llm_dtype")):
        with pytest.raises(SystemExit) as exc:
            parse_args(["--lm_path", "x", flag])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and msg in err[0], err


def test_top_k_candidates_are_the_first_passs_best():
    # first pass = 0.5*ac + lm: 0 -> -7, 1 -> -1.5, 2 -> -5, 3 -> -2, 4 -> -1.5 (tie with 1: the earlier one wins)
    nbest = [Hypothesis(f"s{i}", ac, lm) for i, (ac, lm) in enumerate([(-6, -4), (-1, -1), (-2, -4), (0, -2), (-1, -1)])]
    pick = llm_rescore.top_k_candidates
    assert [h.sentence for h in pick(nbest, 0.5, 1)] == ["s1"]
    assert [h.sentence for h in pick(nbest, 0.5, 2)] == ["s1", "s4"]  # input order kept
    assert [h.sentence for h in pick(nbest, 0.5, 3)] == ["s1", "s3", "s4"]
    assert pick(nbest, 0.5, 0) == nbest and pick(nbest, 0.5, 5) == nbest
    # the acoustic scale weighs the acoustic score: at 4.0, 0 -> -28, 1 -> -5, 2 -> -12, 3 -> -2, 4 -> -5
    assert [h.sentence for h in pick(nbest, 4.0, 2)] == ["s1", "s3"]


def test_rescoring_the_top_k_scores_and_returns_only_them(scorer):
    rng = np.random.default_rng(7)
    texts = list(dict.fromkeys(random_nbest(rng, 40)))
    nbest = [Hypothesis(t, float(rng.normal(-50, 5)), float(rng.normal(-20, 3))) for t in texts]
    best_all, rows_all = rescore_nbest(scorer, nbest, 0.325, 0.55)
    llm_all = {r.sentence: r.llm for r in rows_all}
    best, rows = rescore_nbest(scorer, nbest, 0.325, 0.55, top_k=10)
    want = [h.sentence for h in llm_rescore.top_k_candidates(nbest, 0.325, 10)]
    first = max(nbest, key=lambda h: 0.325 * h.ac + h.lm).sentence
    assert first in want  # the n-gram-only answer stays in the list
    assert [r.sentence for r in rows] == want and len(rows) == 10 and scorer.last_stats["candidates"] == 10
    for r in rows:  # the same LLM scores as when every candidate is scored
        assert r.llm == pytest.approx(llm_all[r.sentence], abs=1e-4)
        assert r.total == pytest.approx(0.325 * r.ac + 0.45 * r.lm + 0.55 * r.llm)
    assert best == max(rows, key=lambda r: r.total).sentence
    if best_all in want:
        assert best == best_all
    # with the pruning on as well: the same best of the 10
    assert rescore_nbest(scorer, nbest, 0.325, 0.55, prune=True, top_k=10)[0] == best


def test_top_k_row_in_the_table_and_on_the_command_line(capsys):
    pytest.importorskip("kaldifst")
    from language_model.serving.args import parse_args

    assert LMParams().llm_top_k == 50 and LMParams(llm_top_k=0).llm_top_k == 0
    with pytest.raises(LMParamError, match=r"llm_top_k=-1: expected a whole number in \[0, 2147483647\]"):
        LMParams(llm_top_k=-1)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--lm_path", "x", "--llm_top_k", "2.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "--llm_top_k='2.5': expected a whole number in [0, 2147483647]" in err[0], err
