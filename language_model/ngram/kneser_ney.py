"""Interpolated modified Kneser-Ney (Chen & Goodman), written in back-off (ARPA) form.

As KenLM's ``lmplz`` / SRILM ``-kndiscount -interpolate``:

* The highest order uses raw counts; lower orders use continuation counts (the number of distinct
  words seen before the n-gram), except n-grams starting with ``<s>``, which keep raw counts.
* Three discounts per order from the count-of-counts of those counts:
  ``Y = n1/(n1+2 n2)``, ``D1 = 1-2Y n2/n1``, ``D2 = 2-3Y n3/n2``, ``D3+ = 3-4Y n4/n3``; when they are
  undefined or out of range (tiny corpora) the fallback 0.5, 1.0, 1.5 is used, as ``lmplz
  --discount_fallback``.
* ``p(w|c) = (a(cw) - D(a(cw))) / a(c.) + gamma(c) p(w|c')`` with
  ``gamma(c) = (D1 N1(c.) + D2 N2(c.) + D3+ N3+(c.)) / a(c.)``; unigrams interpolate with the
  uniform distribution over the vocabulary (``<s>`` excluded), so unseen vocabulary words get
  ``gamma / |V|``.
* The backoff weight of a context is ``gamma(c)``; with count cut-offs (``min_counts``) the dropped
  n-grams' mass is returned to the back-off by recomputing weights (``compute_backoff_weights``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from language_model.ngram.arpa import BackoffLM, compute_backoff_weights, context_backoff_weights
from language_model.ngram.counts import BOS_ID, NGram, NGramCounts, event_vocabulary

log = logging.getLogger(__name__)

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def kn_discounts(adjusted: Counter, label: str = "") -> tuple[float, float, float]:
    """(D1, D2, D3+) from the count-of-counts of (adjusted) counts.

    Args:
        adjusted: n-gram -> adjusted count of one order.
        label: name for the log messages.

    Returns:
        The three discounts (the fallback 0.5, 1.0, 1.5 when undefined or out of range).
    """
    return kn_discounts_from_count_of_counts(Counter(c for c in adjusted.values() if c <= 4), label)


def kn_discounts_from_count_of_counts(n: Counter, label: str = "") -> tuple[float, float, float]:
    """(D1, D2, D3+) from count-of-counts ``n[1..4]`` (see :func:`kn_discounts`).

    Args:
        n: count-of-counts of the adjusted counts.
        label: name for the log messages.

    Returns:
        The three discounts.
    """
    try:
        y = n[1] / (n[1] + 2 * n[2])
        d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
    except ZeroDivisionError:
        d = (-1.0, -1.0, -1.0)
    if not all(0.0 < x < r for x, r in zip(d, (1, 2, 3))):
        log.warning("%s: KN discounts %s out of range (count-of-counts %s); using %s", label, d, dict(n),
                    FALLBACK_DISCOUNTS)  # fmt: skip
        return FALLBACK_DISCOUNTS
    log.info("%s: KN discounts %s", label, tuple(round(x, 4) for x in d))
    return d


def adjusted_counts(counts: NGramCounts) -> list[Counter]:
    """Raw counts for the highest order; continuation counts below it (raw for ``<s> ...``).

    Args:
        counts: n-gram counts.

    Returns:
        One counter per order (index k: order k+1).
    """
    order = counts.order
    adjusted: list[Counter] = [Counter() for _ in range(order)]
    adjusted[order - 1] = counts.counts[order - 1]
    for k in range(order - 1, 0, -1):
        cont = adjusted[k - 1]
        for ngram in counts.counts[k]:
            suffix = ngram[1:]
            if suffix[0] != BOS_ID:
                cont[suffix] += 1
        for ngram, c in counts.counts[k - 1].items():
            if ngram[0] == BOS_ID:
                cont[ngram] = c
    return adjusted


def estimate_kn(counts: NGramCounts, min_counts: Sequence[int] | None = None) -> BackoffLM:
    """Interpolated modified Kneser-Ney LM from n-gram counts (see the module docstring).

    Args:
        counts: n-gram counts.
        min_counts: ``min_counts[k]``: n-grams of order k+1 with a raw count below it are left out (orders
            >= 2; a shorter list repeats its last value; default: keep everything).

    Returns:
        The model with backoff weights.
    """
    order = counts.order
    mins = list(min_counts or [1])
    mins = [mins[min(k, len(mins) - 1)] for k in range(order)]
    adjusted = adjusted_counts(counts)
    lm = BackoffLM(order=order, words=list(counts.words))
    vocab = event_vocabulary(counts)
    for k in range(order):
        events = Counter({g: c for g, c in adjusted[k].items() if g[-1] != BOS_ID})
        d1, d2, d3 = kn_discounts(events, f"{k + 1}-grams")
        totals: dict[NGram, int] = {}
        gamma_mass: dict[NGram, float] = {}
        for ngram, a in events.items():
            ctx = ngram[:-1]
            totals[ctx] = totals.get(ctx, 0) + a
            gamma_mass[ctx] = gamma_mass.get(ctx, 0.0) + (d1 if a == 1 else d2 if a == 2 else d3)
        probs: dict[NGram, float] = {}
        raw = counts.counts[k]
        for ngram, a in events.items():
            if k > 0 and raw.get(ngram, 0) < mins[k]:
                continue
            ctx = ngram[:-1]
            lower = 1.0 / len(vocab) if k == 0 else lm.prob(ngram[-1], ctx[1:])
            disc = d1 if a == 1 else d2 if a == 2 else d3
            probs[ngram] = (a - disc) / totals[ctx] + gamma_mass[ctx] / totals[ctx] * lower
        if k == 0:
            gamma = gamma_mass[()] / totals[()]
            for i in vocab:
                probs.setdefault((i,), gamma / len(vocab))
            probs[(BOS_ID,)] = 0.0
        lm.probs[k] = probs
        if k > 0:  # the next order interpolates with this one through its back-off weights
            lm.bows[k - 1] = context_backoff_weights(lm, k)
    compute_backoff_weights(lm)
    return lm
