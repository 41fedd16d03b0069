"""SRILM-style relative-entropy pruning of a back-off LM (``ngram -prune THRESH``, Stolcke 1998).

For every explicit n-gram (h, w) of order >= 2, highest order first, the change in the model's
entropy if it were removed (w then backs off to ``bow'(h) p(w|h')``, and the other backed-off words
of h see ``bow'(h)`` instead of ``bow(h)``) is

    dH = -P(h) [ p(w|h) (ln(bow'(h) p(w|h')) - ln p(w|h)) + (1 - sum p(.|h)) (ln bow'(h) - ln bow(h)) ]
    bow'(h) = (1 - sum p(.|h) + p(w|h)) / (1 - sum p(.|h') + p(w|h'))

where P(h) is the context's probability under the model (chain rule; a leading ``<s>`` counts as
``p(</s>)``, as SRILM does). The n-gram is pruned when ``exp(dH) - 1`` (the relative perplexity
increase) is below the threshold. Each n-gram is judged against the unpruned context (SRILM does
the same), then the context's backoff weight is recomputed. Unigrams are never pruned, and an
n-gram that is the context of a surviving higher-order n-gram is kept (the ARPA format needs it).
"""

from __future__ import annotations

import logging
import math

from language_model.ngram.arpa import BackoffLM, compute_backoff_weights, context_backoff_weights
from language_model.ngram.counts import NGram

log = logging.getLogger(__name__)


def _context_logprob(lm: BackoffLM, ctx: NGram, bos: int, eos: int, cache: dict[NGram, float]) -> float:
    """ln P(ctx) by the chain rule (memoised)."""
    if ctx in cache:
        return cache[ctx]
    if len(ctx) == 1:
        p = lm.prob(eos if ctx[0] == bos else ctx[0], ())
        value = math.log(p) if p > 0 else -math.inf
    else:
        p = lm.prob(ctx[-1], ctx[:-1])
        value = _context_logprob(lm, ctx[:-1], bos, eos, cache) + (math.log(p) if p > 0 else -math.inf)
    cache[ctx] = value
    return value


def prune_relative_entropy(lm: BackoffLM, threshold: float) -> int:
    """Prune ``lm`` in place (see the module docstring).

    Args:
        lm: the model (orders >= 2 are pruned; backoff weights are recomputed).
        threshold: relative perplexity increase below which an n-gram is removed (SRILM ``-prune``).

    Returns:
        The number of n-grams removed.
    """
    if threshold <= 0.0:
        return 0
    index = lm.word_ids()
    bos, eos = index["<s>"], index["</s>"]
    removed_total = 0
    for k in range(lm.order - 1, 0, -1):  # probs[k]: (k+1)-grams with contexts of length k
        protected = {g[:-1] for g in lm.probs[k + 1]} if k + 1 < lm.order else set()
        num: dict[NGram, float] = {}
        den: dict[NGram, float] = {}
        lower: dict[NGram, float] = {}
        for ngram, p in lm.probs[k].items():
            ctx = ngram[:-1]
            pl = lm.prob(ngram[-1], ctx[1:])
            lower[ngram] = pl
            num[ctx] = num.get(ctx, 1.0) - p
            den[ctx] = den.get(ctx, 1.0) - pl
        cache: dict[NGram, float] = {}
        doomed = []
        for ngram, p in lm.probs[k].items():
            if ngram in protected or p <= 0.0:
                continue
            ctx = ngram[:-1]
            n, d, pl = max(num[ctx], 0.0), max(den[ctx], 0.0), lower[ngram]
            if pl <= 0.0 or d + pl <= 0.0:
                continue
            bow = lm.bows[k - 1].get(ctx, 1.0)
            new_bow = (n + p) / (d + pl)
            p_ctx = math.exp(_context_logprob(lm, ctx, bos, eos, cache))
            delta = p * (math.log(new_bow * pl) - math.log(p))
            if n > 0.0 and bow > 0.0:
                delta += n * (math.log(new_bow) - math.log(bow))
            if math.expm1(-p_ctx * delta) < threshold:
                doomed.append(ngram)
        for ngram in doomed:
            del lm.probs[k][ngram]
        lm.bows[k - 1] = context_backoff_weights(lm, k)
        removed_total += len(doomed)
        log.info("pruning %d-grams: removed %d, kept %d", k + 1, len(doomed), len(lm.probs[k]))
    compute_backoff_weights(lm)
    return removed_total
