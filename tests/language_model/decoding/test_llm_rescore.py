"""Causal-LM rescoring: exact log-probabilities, batching, BOS handling, the score formula, offline errors."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from language_model.decoding.llm_rescore import (  # noqa: E402
    CausalLMScorer,
    LLMUnavailableError,
    clean_hypothesis,
    rescore_nbest,
    resolve_model_path,
)
from nejm_b2txt_utils.hypothesis import Hypothesis  # noqa: E402
from tests.language_model._lm_testing import make_tiny_causal_lm  # noqa: E402

SENTS = ["i need water", "please help me", "i want to go home now", "the door"]


@pytest.fixture(scope="module")
def opt_dir(tmp_path_factory):
    return make_tiny_causal_lm(tmp_path_factory.mktemp("opt") / "tiny_opt", add_bos=True)


@pytest.fixture(scope="module")
def scorer(opt_dir):
    return CausalLMScorer.load(str(opt_dir))


def manual_logprob(scorer, text: str) -> tuple[float, int]:
    ids = [1] + [scorer.tok.convert_tokens_to_ids(w) for w in text.split()]
    with torch.no_grad():
        logp = torch.log_softmax(scorer.model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids))), len(ids)


def test_scores_are_token_logprob_sums_after_bos(scorer):
    assert scorer.prepend_bos is None  # the OPT-like tokenizer adds </s> itself
    got = scorer.score(SENTS)
    for text, value in zip(SENTS, got):
        want, _ = manual_logprob(scorer, text)
        assert value == pytest.approx(want, abs=1e-4)
    # padding does not leak: the batch equals one-by-one scoring, and sub-batches change nothing
    assert got == pytest.approx([scorer.score([t])[0] for t in SENTS], abs=1e-4)
    scorer.max_batch = 3
    assert scorer.score(SENTS) == pytest.approx(got, abs=1e-4)
    scorer.max_batch = 0


def test_length_penalty_counts_bos_like_the_original(scorer):
    lp = 0.7
    for text, a, b in zip(SENTS, scorer.score(SENTS), scorer.score(SENTS, length_penalty=lp)):
        _, n_tokens = manual_logprob(scorer, text)
        assert b == pytest.approx(a - n_tokens * lp, abs=1e-4)


def test_bos_is_prepended_when_the_tokenizer_does_not(tmp_path, scorer):
    plain = CausalLMScorer.load(str(make_tiny_causal_lm(tmp_path / "gpt2_like", add_bos=False)))
    assert plain.prepend_bos == 1
    assert plain.score(SENTS) == pytest.approx(scorer.score(SENTS), abs=1e-4)  # same weights, same inputs


def test_failed_batches_fall_back_like_the_original(scorer, monkeypatch):
    calls = []

    def flaky(texts, lp):
        calls.append(len(texts))
        if len(texts) > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return [float(len(t)) for t in texts]

    monkeypatch.setattr(scorer, "_score_batch", flaky)
    assert list(scorer.score(SENTS * 2)) == [float(len(t)) for t in SENTS * 2]
    assert calls[0] == 8 and set(calls[1:]) == {2}  # all at once, then 5 sub-batches of ceil(8/5)
    monkeypatch.setattr(scorer, "_score_batch", lambda texts, lp: 1 / 0)
    assert list(scorer.score(SENTS)) == [0.0] * 4


def test_rescore_formula_empty_hypotheses_and_context(scorer):
    nbest = [Hypothesis("i need water", -40.0, -8.0), Hypothesis("  ", -41.0, -9.0),
             Hypothesis("i need some water", -45.0, -10.0)]
    best, rows = rescore_nbest(scorer, nbest, acoustic_scale=0.325, alpha=0.55, length_penalty=0.0)
    # fixed: the empty candidate is dropped from the rows too, so every row keeps its own scores
    assert [r.sentence for r in rows] == ["i need water", "i need some water"]
    for r, h in zip(rows, [nbest[0], nbest[2]]):
        assert r.llm == pytest.approx(scorer.score([h.sentence])[0], abs=1e-4)
        assert r.total == pytest.approx(0.325 * h.ac + 0.45 * h.lm + 0.55 * r.llm, abs=1e-6)
    assert best == max(rows, key=lambda r: r.total).sentence
    _, ctx_rows = rescore_nbest(scorer, nbest, 0.325, 0.55, context="hello")
    assert [r.sentence for r in ctx_rows] == [r.sentence for r in rows]  # context is not in the output
    assert ctx_rows[0].llm == pytest.approx(scorer.score(["hello i need water"])[0], abs=1e-4)
    assert rescore_nbest(scorer, [Hypothesis("", -1.0, -1.0)], 0.3, 0.5) == ("", [])
    assert clean_hypothesis("a  b ,c > d .") == "a b,c d."


def test_unavailable_hub_model_fails_at_once_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(LLMUnavailableError, match="--opt_model smollm2"):
        resolve_model_path("facebook/opt-6.7b", cache_dir=str(tmp_path / "hf"))
    assert time.perf_counter() - t0 < 5
    with pytest.raises(LLMUnavailableError, match="config.json"):
        resolve_model_path(str(tmp_path))
    # reported: a missing folder read as a hub id ("Repo id must use alphanumeric chars ...")
    with pytest.raises(LLMUnavailableError, match=r"--opt_model /nonexistent/model: no such folder"):
        resolve_model_path("/nonexistent/model")
    with pytest.raises(LLMUnavailableError, match=r"neither a local folder nor a valid hub id"):
        resolve_model_path("bad name with spaces", cache_dir=str(tmp_path / "hf"))


@pytest.mark.slow
def test_embedded_smollm2_prefers_fluent_sentences(tmp_path_factory):
    """The embedded model, converted once per session (~20 s) unless $B2TXT_SMOLLM2_DIR holds it already."""
    from language_model.decoding.smollm2 import CACHE_ENV, ensure_smollm2, is_converted

    pytest.importorskip("gguf")
    cached = os.environ.get(CACHE_ENV)
    reuse = cached and is_converted(Path(cached).expanduser())
    folder = ensure_smollm2(cached if reuse else tmp_path_factory.mktemp("smollm2") / "hf")
    assert is_converted(folder) and ensure_smollm2(folder) == folder  # second call: no conversion
    scorer = CausalLMScorer.load(str(folder))
    assert scorer.prepend_bos == scorer.tok.convert_tokens_to_ids("<|endoftext|>")
    fluent, scrambled, homophone = scorer.score(["i want to go home", "home go to want i", "i want two go home"])
    assert fluent > scrambled + 5 and fluent > homophone + 5
    assert math.isfinite(fluent) and np.isfinite(scorer.score(["i need water"] * 3)).all()
    # SmolLM2 is a plain Llama: the prefix tree runs the lean forward, equal to the Hugging Face one in float32
    from language_model.decoding.llama_forward import LlamaTreeForward
    from language_model.decoding.prefix_tree import TreeForward, build_prefix_tree

    f32 = CausalLMScorer.load(str(folder), dtype="float32")
    assert LlamaTreeForward.supports(f32.model)
    tree = build_prefix_tree(f32._rows(["i want to go home", "i want to go now", "i want two go home", "we want it"]))
    sums = []
    for use_lean in (True, False):
        fwd = TreeForward(f32.model, tree, keep_cache=False, use_lean=use_lean)
        fwd.evaluate(np.arange(len(tree.tokens)))
        sums.append(fwd.sums()[0])
    np.testing.assert_allclose(sums[0], sums[1], atol=1e-3)
    np.testing.assert_allclose(scorer.score(["i want to go home"]), sums[1][:1], atol=0.5)  # bfloat16, lean
