"""Good-Turing discounting with Katz back-off: SRILM ``ngram-count``'s default estimator.

The original recipe ran ``ngram-count -order N -gt1min 0 -gt2min 1 ... -unk -limit-vocab`` with no
smoothing flag, i.e. SRILM's default (spec §5.3). This module re-implements that estimator from
SRILM's documented behaviour (``Discount.cc`` ``GoodTuring``, ``NgramLM.cc`` ``estimate``):

* Discount coefficients per order from count-of-counts ``n_r`` (of n-grams whose last word is an
  event, i.e. not ``<s>``) for ``1 <= r <= gtmax``, Katz's formula
  ``d_r = (r*/r - (k+1) n_{k+1}/n_1) / (1 - (k+1) n_{k+1}/n_1)`` with ``r* = (r+1) n_{r+1}/n_r``.
  ``gtmax`` defaults to 1 for unigrams and 7 above (SRILM's defaults); it is lowered while
  ``n_{gtmax+1} = 0``; a coefficient that is not finite, <= ``Prob_Epsilon`` or from ``r*/r > 1``
  falls back to 1.0 (no discount). Note that with ``gtmax = 1`` Katz's formula gives 0 for
  singletons, so SRILM's default leaves unigrams undiscounted.
* Counts above ``gtmax`` are not discounted; n-grams with count below ``gtNmin`` are dropped (their
  mass goes to the back-off). SRILM's own defaults are ``gtmin`` = 1, 1, 2, 2, ...; the original
  recipe passed 0, 1, 1, ... (keep every n-gram), which is our default.
* ``p(w|c) = d(c(cw)) c(cw) / sum_v c(cv)``. If a context has (almost) no mass left
  (``sum p > 1 - 3e-6``) but has not seen every vocabulary word, the denominator is incremented
  by one and the estimate redone (the "Doug Paul" hack), unless discounting is disabled for that
  order.
* Unigram mass left over is spread evenly over the vocabulary words without a probability
  (or added evenly to all words when there are none); ``<s>`` gets probability 0 (``-99``).
* Backoff weights make every context sum to 1 (``arpa.compute_backoff_weights``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

from language_model.ngram.arpa import PROB_EPSILON, BackoffLM, compute_backoff_weights
from language_model.ngram.counts import BOS_ID, NGram, NGramCounts, event_vocabulary

log = logging.getLogger(__name__)

#: The original recipe's cut-offs: ``-gt1min 0 -gt2min 1 ... -gt6min 1`` (keep every n-gram).
RECIPE_MIN_COUNTS = (0, 1, 1, 1, 1, 1, 1, 1, 1)
#: SRILM's built-in ``gtNmin`` defaults (used when ngram-count gets no -gtNmin flags).
SRILM_DEFAULT_MIN_COUNTS = (1, 1, 2, 2, 2, 2, 2, 2, 2)
#: SRILM's built-in ``gtNmax`` defaults.
SRILM_DEFAULT_MAX_COUNTS = (1, 7, 7, 7, 7, 7, 7, 7, 7)


class GoodTuring:
    """Discount coefficients of one order (SRILM ``GoodTuring``)."""

    def __init__(self, min_count: int, max_count: int):
        """Args:
            min_count: ``gtNmin``: counts below it are dropped (discount 0).
            max_count: ``gtNmax``: counts above it are not discounted.
        """
        self.min_count = min_count
        self.max_count = max_count
        self.coeffs: dict[int, float] = {}

    def estimate(self, counts: Counter, order_label: str = "") -> GoodTuring:
        """Discount coefficients from the count-of-counts of ``counts`` (``max_count`` may be lowered).

        Args:
            counts: n-gram -> count of one order.
            order_label: name for the log messages.

        Returns:
            ``self``.
        """
        count_of_counts = Counter(
            c for ngram, c in counts.items() if ngram[-1] != BOS_ID and c <= self.max_count + 1
        )
        return self.estimate_from_count_of_counts(count_of_counts, order_label)

    def estimate_from_count_of_counts(self, n: Counter, order_label: str = "") -> GoodTuring:
        """Discount coefficients from count-of-counts (``n[r]``: event n-grams seen r times, r <= gtmax + 1).

        Args:
            n: the count-of-counts (``estimate_arrays.py`` computes them with ``np.bincount``).
            order_label: name for the log messages.

        Returns:
            ``self``.
        """
        if n[1] == 0:
            log.warning("%s: no singleton counts; Good-Turing discounting disabled", order_label)
            self.max_count = 0
        while self.max_count > 0 and n[self.max_count + 1] == 0:
            log.warning("%s: count of count %d is zero; lowering gtmax", order_label, self.max_count + 1)
            self.max_count -= 1
        self.coeffs = {}
        if self.max_count <= 0:
            log.info("%s: Good-Turing discounting disabled", order_label)
            return self
        common = (self.max_count + 1) * n[self.max_count + 1] / n[1]
        for r in range(1, self.max_count + 1):
            coeff = 1.0
            if n[r] == 0:
                log.warning("%s: count of count %d is zero", order_label, r)
            else:
                ratio = (r + 1) * n[r + 1] / (r * n[r])
                value = (ratio - common) / (1.0 - common) if common != 1.0 else math.nan
                if math.isfinite(value) and value > PROB_EPSILON and ratio <= 1.0:
                    coeff = value
                else:
                    log.debug("%s: discount coeff %d out of range (%s); using 1.0", order_label, r, value)
            self.coeffs[r] = coeff
        log.info("%s: GT discounts %s", order_label, {r: round(c, 4) for r, c in self.coeffs.items()})
        return self

    @property
    def no_discount(self) -> bool:
        """Whether this order is neither cut nor discounted.

        Returns:
            True when every count keeps its full mass.
        """
        return self.min_count <= 1 and self.max_count <= 0

    def discount(self, count: int) -> float:
        """The discount coefficient of a count.

        Args:
            count: an n-gram's count.

        Returns:
            The factor (0 below ``min_count``, 1 above ``max_count``).
        """
        if count <= 0:
            return 1.0
        if count < self.min_count:
            return 0.0
        if count > self.max_count:
            return 1.0
        return self.coeffs[count]


def _per_order(values: Sequence[int] | None, default: Sequence[int], order: int) -> list[int]:
    values = list(values) if values is not None else []
    return [values[k] if k < len(values) else (values[-1] if values else default[min(k, len(default) - 1)])
            for k in range(order)]  # fmt: skip


def estimate_katz(
    counts: NGramCounts,
    min_counts: Sequence[int] | None = None,
    max_counts: Sequence[int] | None = None,
) -> BackoffLM:
    """Katz back-off LM with Good-Turing discounts from n-gram counts (see the module docstring).

    Args:
        counts: n-gram counts.
        min_counts: ``gtNmin`` per order (a shorter list repeats its last value; default: the recipe's).
        max_counts: ``gtNmax`` per order (default: SRILM's).

    Returns:
        The model with backoff weights.
    """
    order = counts.order
    mins = _per_order(min_counts, RECIPE_MIN_COUNTS, order)
    maxs = _per_order(max_counts, SRILM_DEFAULT_MAX_COUNTS, order)
    lm = BackoffLM(order=order, words=list(counts.words))
    vocab = event_vocabulary(counts)
    for k in range(order):
        gt = GoodTuring(mins[k], maxs[k]).estimate(counts.counts[k], f"{k + 1}-grams")
        lm.probs[k] = _discounted_probs(counts.counts[k], gt, len(vocab))
        if k == 0:
            _complete_unigrams(lm, vocab)
    compute_backoff_weights(lm)
    return lm


def _discounted_probs(counter: Counter, gt: GoodTuring, vocab_size: int) -> dict[NGram, float]:
    """Discounted relative frequencies per context, with SRILM's denominator-increment retries
    (only for contexts that have not seen every vocabulary word)."""
    totals: dict[NGram, int] = {}
    observed: dict[NGram, int] = {}
    for ngram, c in counter.items():
        if ngram[-1] != BOS_ID and c > 0:
            ctx = ngram[:-1]
            totals[ctx] = totals.get(ctx, 0) + c
            observed[ctx] = observed.get(ctx, 0) + 1
    extra: dict[NGram, int] = {}  # contexts whose denominator was incremented
    while True:
        probs: dict[NGram, float] = {}
        mass: dict[NGram, float] = {}
        for ngram, c in counter.items():
            if ngram[-1] == BOS_ID:
                continue
            d = gt.discount(c)
            if d == 0.0:
                continue
            ctx = ngram[:-1]
            p = d * c / (totals[ctx] + extra.get(ctx, 0))
            probs[ngram] = p
            mass[ctx] = mass.get(ctx, 0.0) + p
        if gt.no_discount:
            return probs
        full = [ctx for ctx, m in mass.items() if m > 1.0 - PROB_EPSILON and observed[ctx] < vocab_size]
        if not full:
            return probs
        for ctx in full:
            extra[ctx] = extra.get(ctx, 0) + 1
        log.debug("%d contexts left without backoff mass; incrementing their denominators", len(full))


def _complete_unigrams(lm: BackoffLM, vocab: list[int]) -> None:
    """``<s>`` gets probability 0; left-over mass goes to vocabulary words without a probability
    (SRILM ``distributeProb``: evenly over the zero-probability words, else over all words)."""
    uni = lm.probs[0]
    left = 1.0 - sum(uni.values())
    zero = [i for i in vocab if uni.get((i,), 0.0) == 0.0]
    if zero:  # SRILM lists them even with no mass left (then with -99)
        for i in zero:
            uni[(i,)] = max(left, 0.0) / len(zero)
    elif left > 0.0:
        for i in vocab:
            uni[(i,)] += left / len(vocab)
    uni[(BOS_ID,)] = 0.0
    log.info("unigrams: %d words, %d unseen sharing %.3g of the mass", len(vocab), len(zero), max(left, 0.0))
