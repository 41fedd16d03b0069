"""Relative-entropy pruning over sorted arrays, to a threshold or to a size budget (the first-pass LM).

The criterion is Stolcke's (1998), as SRILM's ``ngram -prune`` and ``prune.py`` compute it: removing the
n-gram (h, w) changes the model's entropy by

    dH = -P(h) [ p(w|h) (ln(bow'(h) p(w|h')) - ln p(w|h)) + (1 - sum p(.|h)) (ln bow'(h) - ln bow(h)) ]

and it is pruned when ``exp(dH) - 1`` (the relative perplexity increase) is below the threshold. As in SRILM
and ``prune.py`` every n-gram is judged against the unpruned model (SRILM and ``prune.py`` go highest order
first, and an order's criterion only depends on the lower orders, which are still unpruned then), an n-gram
that is the context of a kept longer n-gram is kept, unigrams are never pruned, and the backoff weights are
recomputed afterwards. So :func:`prune_to_threshold` keeps exactly the n-grams ``prune.py`` keeps.

Budget: every n-gram gets an *effective* criterion, the maximum of its own and its descendants' (it is kept iff
that is >= the threshold, by the context rule), so the threshold that keeps at most ``max_ngrams`` n-grams in
total is one order statistic of these values (:func:`prune_to_size`): no search, one pass. SRILM has no size
target (only ``-prune`` thresholds, tried by hand); this picks the threshold SRILM would need for the size.
"""

from __future__ import annotations

import logging

import numpy as np

from language_model.ngram.array_lm import (
    BLOCK,
    ArrayLM,
    context_backoff_weights,
    context_logprob,
    lower_order_prob,
    parent_index,
)

log = logging.getLogger(__name__)


def pruning_criterion(lm: ArrayLM) -> list[np.ndarray]:
    """The relative perplexity increase of removing each n-gram of order >= 2 (see the module docstring).

    Args:
        lm: the unpruned model (every context has its bow).

    Returns:
        ``crit[m-1]`` [n_m] for m = 2..N (``crit[0]`` is +inf: unigrams stay); +inf where an n-gram is never
        pruned (probability 0, or no lower-order probability to back off to).
    """
    log_p_ctx = context_logprob(lm)
    crit = [np.full(len(lm.keys[0]), np.inf)]
    for m in range(2, lm.order + 1):
        keys, probs = lm.keys[m - 1], lm.probs[m - 1]
        parents = parent_index(lm, m)
        n_ctx = len(lm.keys[m - 2])
        lower = lower_order_prob(lm, keys, m)
        num_ctx = np.maximum(1.0 - np.bincount(parents, weights=probs, minlength=n_ctx), 0.0)
        den_ctx = np.maximum(1.0 - np.bincount(parents, weights=lower, minlength=n_ctx), 0.0)
        out = np.empty(len(keys))
        for a in range(0, len(keys), BLOCK):  # in blocks: ~10 temporaries per n-gram stay small
            parent, p, pl = parents[a : a + BLOCK], np.asarray(probs[a : a + BLOCK]), lower[a : a + BLOCK]
            num, den, bow = num_ctx[parent], den_ctx[parent], np.asarray(lm.bows[m - 2])[parent]
            ok = (p > 0.0) & (pl > 0.0) & (den + pl > 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                new_bow = (num + p) / (den + pl)
                delta = p * (np.log(new_bow * pl) - np.log(p))
                delta += np.where((num > 0.0) & (bow > 0.0), num * (np.log(new_bow) - np.log(bow)), 0.0)
                c = np.expm1(-np.exp(log_p_ctx[m - 2][parent]) * delta)
            out[a : a + BLOCK] = np.where(ok & ~np.isnan(c), c, np.inf)
        crit.append(out)
        del parents, lower
    return crit


def effective_criterion(lm: ArrayLM, crit: list[np.ndarray]) -> list[np.ndarray]:
    """Each n-gram's criterion raised to the largest of its descendants' (it must stay while one of them does).

    Args:
        lm: the model.
        crit: :func:`pruning_criterion`.

    Returns:
        Per order, like ``crit``.
    """
    eff = list(crit)
    for m in range(lm.order - 1, 1, -1):
        parent = parent_index(lm, m + 1)
        if len(parent) == 0:
            continue
        uniq, start = np.unique(parent, return_index=True)
        child_max = np.full(len(eff[m - 1]), -np.inf)
        child_max[uniq] = np.maximum.reduceat(eff[m], start)
        eff[m - 1] = np.maximum(crit[m - 1], child_max)
    return eff


def _apply(lm: ArrayLM, keep: list[np.ndarray]) -> ArrayLM:
    out = ArrayLM(order=lm.order, words=lm.words)
    out.keys = [lm.keys[0], *(lm.keys[m][keep[m]] for m in range(1, lm.order))]
    out.probs = [lm.probs[0].copy(), *(lm.probs[m][keep[m]] for m in range(1, lm.order))]
    out.bows = [np.ones(len(k)) for k in out.keys[:-1]]
    out.has_bow = [np.zeros(len(k), bool) for k in out.keys[:-1]]
    for m in range(1, lm.order):
        context_backoff_weights(out, m)
    log.info("pruned: n-grams per order %s -> %s", lm.num_ngrams(), out.num_ngrams())
    return out


def prune_to_threshold(lm: ArrayLM, threshold: float) -> ArrayLM:
    """SRILM ``-prune threshold`` (``prune.py``'s result) over arrays.

    Args:
        lm: the unpruned model.
        threshold: relative perplexity increase below which an n-gram is removed.

    Returns:
        A new, pruned model with recomputed backoff weights.
    """
    eff = effective_criterion(lm, pruning_criterion(lm))
    return _apply(lm, [e >= threshold for e in eff])


def prune_to_size(lm: ArrayLM, max_ngrams: int) -> tuple[ArrayLM, float]:
    """Prune to at most ``max_ngrams`` n-grams in all (unigrams included and never pruned).

    Args:
        lm: the unpruned model.
        max_ngrams: the budget.

    Returns:
        ``(pruned model, the threshold used)`` (0.0 when the model already fits; +inf when only the unigrams
        fit).
    """
    budget = max_ngrams - len(lm.keys[0])
    if sum(lm.num_ngrams()) <= max_ngrams:
        return lm, 0.0
    if budget <= 0:
        log.warning("the budget of %d n-grams leaves only the %d unigrams", max_ngrams, len(lm.keys[0]))
        return _apply(lm, [np.ones(len(k), bool) if m == 0 else np.zeros(len(k), bool)
                           for m, k in enumerate(lm.keys)]), np.inf  # fmt: skip
    eff = effective_criterion(lm, pruning_criterion(lm))
    values = np.concatenate(eff[1:])
    # keep the n-grams strictly above the (budget+1)-th largest value: at most `budget` of them
    threshold = float(np.partition(values, len(values) - budget - 1)[len(values) - budget - 1])
    keep = [np.ones(len(lm.keys[0]), bool), *(e > threshold for e in eff[1:])]
    log.info("pruning to %d n-grams: relative-entropy threshold %.3g", max_ngrams, threshold)
    return _apply(lm, keep), threshold


def cap_backoffs(lm: ArrayLM, max_bow: float = 1.0) -> tuple[ArrayLM, int]:
    """The same model with every backoff weight above ``max_bow`` set to it: for a first-pass graph.

    A G.fst follows back-off as an epsilon arc weighted by the backoff weight, beside the explicit n-gram, so
    where a weight exceeds 1 the search can score a word better through back-off than the ARPA does. Pruning
    hard makes that routine: with most ``the X`` bigrams kept and their unigram mass gone, ``bow(the)`` reached
    58 (log10 1.76) in the 100M-token 4-gram's first pass, so inserting ``the`` before any word *gained* LM score
    and the decode read ``the the the ...`` (WER 103 %). Capped at 1, back-off never pays; the model is then
    deficient (a history's probabilities sum below 1), which only the first pass sees: the exact pass scores the
    n-best with the full LM (the store).

    Args:
        lm: the (pruned) model.
        max_bow: the largest backoff weight kept (linear probability ratio).

    Returns:
        ``(model, n_capped)``: a model sharing every array but the capped orders' ``bows``, and how many weights
        were capped.
    """
    bows, capped = [], 0
    for b in lm.bows:
        b = np.asarray(b)
        over = b > max_bow
        capped += int(over.sum())
        bows.append(np.where(over, max_bow, b).astype(b.dtype) if over.any() else b)
    return ArrayLM(lm.order, lm.words, lm.keys, lm.probs, bows, lm.has_bow), capped
