"""Linear interpolation of two back-off LMs, written as one back-off model (SRILM's ``ngram -mix-lm``).

The mixture ``p(w|h) = lam * p1(w|h) + (1 - lam) * p2(w|h)`` (each ``p_i`` by its own back-off) is made a
back-off model the standard way: its explicit n-grams are the union of both models' explicit n-grams, each
with the mixed probability, and the back-off weights are recomputed so every context sums to one
(:func:`~language_model.ngram.arpa.compute_backoff_weights`). For n-grams explicit in either model this is
the exact mixture; elsewhere it backs off to the mixed lower order, as SRILM's static mixture does.

Use: a small in-domain n-gram (the demo's grammar sentences) mixed with the wordfreq 1-gram, so words the
n-gram never saw keep a realistic probability instead of its ~1e-20 floor. The weight ``lam`` is chosen on
held-out sentences by perplexity under the word-level mixture (:func:`best_mix_weight`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

from language_model.ngram.arpa import BackoffLM, compute_backoff_weights
from language_model.ngram.counts import BOS, EOS

log = logging.getLogger(__name__)

#: Weights of the first model tried by :func:`best_mix_weight`.
WEIGHT_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _prob(lm: BackoffLM, index: dict[str, int], words: Sequence[str]) -> float:
    """p(words[-1] | words[:-1]) under ``lm`` (0 for a word outside its vocabulary)."""
    ids = [index.get(w) for w in words]
    if ids[-1] is None:
        return 0.0
    ctx: list[int] = []
    for i in reversed(ids[:-1]):  # an unknown context word cuts the history there
        if i is None:
            break
        ctx.insert(0, i)
    return lm.prob(ids[-1], ctx)


def interpolate(lm1: BackoffLM, lm2: BackoffLM, weight: float) -> BackoffLM:
    """The static mixture ``weight * lm1 + (1 - weight) * lm2`` as one back-off model.

    Args:
        lm1: first model (its word order comes first in the result).
        lm2: second model.
        weight: weight of ``lm1`` in (0, 1).

    Returns:
        A :class:`BackoffLM` of order ``max(order1, order2)`` over the union of the vocabularies.

    Raises:
        ValueError: ``weight`` outside (0, 1).
    """
    if not 0.0 < weight < 1.0:
        raise ValueError(f"mixture weight must be in (0, 1), got {weight}")
    known = set(lm1.words)
    words = list(lm1.words) + [w for w in lm2.words if w not in known]
    index = {w: i for i, w in enumerate(words)}
    idx1, idx2 = lm1.word_ids(), lm2.word_ids()
    mix = BackoffLM(max(lm1.order, lm2.order), words)
    for lm in (lm1, lm2):
        for k, probs in enumerate(lm.probs):
            for ngram in probs:
                key = tuple(index[lm.words[i]] for i in ngram)
                if key in mix.probs[k]:
                    continue
                text = [words[i] for i in key]
                if text[-1] == BOS:
                    mix.probs[k][key] = 0.0
                    continue
                mix.probs[k][key] = weight * _prob(lm1, idx1, text) + (1 - weight) * _prob(lm2, idx2, text)
    compute_backoff_weights(mix)
    log.info("mixed LM (weight %.3g): %s n-grams", weight, mix.num_ngrams())
    return mix


def mix_logprob(lm1: BackoffLM, lm2: BackoffLM, weight: float, sentences: Iterable[str]) -> tuple[float, int]:
    """Natural-log probability of sentences under the word-level mixture, and the number of predicted tokens.

    Args:
        lm1, lm2: the models.
        weight: weight of ``lm1`` in [0, 1].
        sentences: whitespace-separated words (``</s>`` is predicted at the end of each).

    Returns:
        ``(total ln P, tokens)``; words neither model knows are skipped (not counted).
    """
    idx1, idx2 = lm1.word_ids(), lm2.word_ids()
    total, n = 0.0, 0
    for sent in sentences:
        hist = [BOS]
        for w in [*sent.split(), EOS]:
            p = weight * _prob(lm1, idx1, [*hist[-(lm1.order - 1):], w] if lm1.order > 1 else [w]) + (
                1 - weight) * _prob(lm2, idx2, [*hist[-(lm2.order - 1):], w] if lm2.order > 1 else [w])
            hist.append(w)
            if p > 0.0:
                total += math.log(p)
                n += 1
    return total, n


def best_mix_weight(lm1: BackoffLM, lm2: BackoffLM, dev: Sequence[str],
                    grid: Sequence[float] = WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """The weight of ``lm1`` with the lowest perplexity on ``dev``.

    Args:
        lm1, lm2: the models.
        dev: held-out sentences.
        grid: weights to try, each in (0, 1).

    Returns:
        ``(best weight, {weight: perplexity})``.

    Raises:
        ValueError: ``dev`` has no scorable token.
    """
    ppl: dict[float, float] = {}
    for lam in grid:
        total, n = mix_logprob(lm1, lm2, lam, dev)
        if n == 0:
            raise ValueError("the held-out sentences have no word either model knows")
        ppl[lam] = math.exp(-total / n)
    best = min(ppl, key=lambda lam: (ppl[lam], lam))
    log.info("mixture weight %.3g (dev perplexity %.1f; grid %s)", best, ppl[best],
             {k: round(v, 1) for k, v in ppl.items()})
    return best, ppl
