"""Katz/Good-Turing and modified Kneser-Ney estimation over sorted count arrays.

The vectorised counterparts of ``katz.estimate_katz`` (SRILM's default, the original recipe's smoothing) and
``kneser_ney.estimate_kn``: the same rules (discount coefficients from the same count-of-counts through the
same ``GoodTuring`` / ``kn_discounts_from_count_of_counts`` code, SRILM's denominator-increment retries, the
unigram completion, backoff weights by ``computeBOW``), computed with ``np.bincount`` over the contexts of
sorted n-gram tables (a context's n-grams are contiguous) instead of dicts of tuples. On the same corpus they
write the same ARPA values as the pure-Python estimators (tests/language_model/ngram/test_estimate_arrays.py).

Inputs are the merged tables of :func:`~language_model.ngram.sorted_counts.count_corpus` (closed vocabulary:
every word id is a unigram). Cut-offs (``min_counts``) must not decrease from order 2 upwards, so that every
kept n-gram's context is kept (the ARPA format needs it; the dict estimators insert missing contexts instead).
One difference at float-noise level: when Good-Turing is off for unigrams (no singleton word) nothing is left
for unseen vocabulary words but rounding; ``katz.py`` sums in corpus order and may give them ~1e-16, this
exactly rounded sum gives them 0 (-99). With a singleton word (any real corpus) the left-over mass is real
(SRILM's denominator increment) and both agree.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from language_model.ngram.arpa import PROB_EPSILON
from language_model.ngram.array_lm import (
    BLOCK,
    ArrayLM,
    context_backoff_weights,
    lower_order_prob,
    unigram_keys,
)
from language_model.ngram.counts import BOS_ID
from language_model.ngram.katz import RECIPE_MIN_COUNTS, SRILM_DEFAULT_MAX_COUNTS, GoodTuring, _per_order
from language_model.ngram.kneser_ney import kn_discounts_from_count_of_counts
from language_model.ngram.sorted_counts import (
    CountTable,
    codes_fit,
    ids_to_codes,
    key_slice,
    keys_to_ids,
    last_word,
)

log = logging.getLogger(__name__)


def _count_of_counts(values: np.ndarray, top: int) -> Counter:
    values = values[values <= top]
    return Counter({r: int(n) for r, n in enumerate(np.bincount(values, minlength=top + 1)) if r > 0 and n})


def _check_min_counts(mins: Sequence[int]) -> None:
    if any(mins[k] < mins[k - 1] for k in range(2, len(mins))):
        raise ValueError(f"count cut-offs must not decrease from order 2 up (a kept n-gram needs its context), "
                         f"got {list(mins)}")  # fmt: skip


def _new_lm(tables: Sequence[CountTable], words: list[str]) -> ArrayLM:
    order = len(tables)
    lm = ArrayLM(order=order, words=list(words))
    lm.keys = [np.zeros(0, "S4")] * order
    lm.probs = [np.zeros(0)] * order
    lm.bows = [np.ones(0)] * (order - 1)
    lm.has_bow = [np.zeros(0, bool)] * (order - 1)
    return lm


def _groups(keys: np.ndarray, order: int) -> tuple[np.ndarray, int]:
    """Context group of every sorted key (a context's n-grams are contiguous; all 0 for unigrams)."""
    if order == 1 or len(keys) == 0:
        return np.zeros(len(keys), np.int64), 1
    new = np.ones(len(keys), bool)
    for a in range(1, len(keys), BLOCK):  # in blocks: the context copies stay small
        ctx = key_slice(keys[a - 1 : a + BLOCK], order, 0, order - 1)
        new[a : a + BLOCK] = ctx[1:] != ctx[:-1]
    return np.cumsum(new) - 1, int(new.sum())


def _first_word(keys: np.ndarray, order: int) -> np.ndarray:
    return key_slice(keys, order, 0, 1).view(">u4").astype(np.uint32)


def _dense_unigrams(lm: ArrayLM, keys: np.ndarray, probs: np.ndarray) -> np.ndarray:
    dense = np.zeros(len(lm.words))
    dense[last_word(keys, 1)] = probs
    lm.keys[0] = unigram_keys(len(lm.words))
    return dense


def estimate_katz_arrays(tables: Sequence[CountTable], words: list[str],
                         min_counts: Sequence[int] | None = None,
                         max_counts: Sequence[int] | None = None) -> ArrayLM:
    """Katz back-off with Good-Turing discounts (``katz.estimate_katz``) over sorted count tables.

    Args:
        tables: ``tables[m-1]``: the merged order-m counts.
        words: id -> word (closed vocabulary).
        min_counts: ``gtNmin`` per order (default the recipe's: keep everything).
        max_counts: ``gtNmax`` per order (default SRILM's).

    Returns:
        The model with backoff weights.

    Raises:
        ValueError: cut-offs that decrease from order 2 up.
    """
    order = len(tables)
    mins = _per_order(min_counts, RECIPE_MIN_COUNTS, order)
    maxs = _per_order(max_counts, SRILM_DEFAULT_MAX_COUNTS, order)
    _check_min_counts(mins)
    lm = _new_lm(tables, words)
    vocab_size = len(words) - 1  # every word but <s> is an event (closed vocabulary)
    for k in range(order):
        m = k + 1
        keys, counts = np.asarray(tables[k].keys()), np.asarray(tables[k].counts())
        events = last_word(keys, m) != BOS_ID
        gt = GoodTuring(mins[k], maxs[k])
        gt.estimate_from_count_of_counts(_count_of_counts(counts[events], gt.max_count + 1), f"{m}-grams")
        disc = np.ones(len(counts))
        for r, coeff in gt.coeffs.items():
            disc[counts == r] = coeff
        disc[counts < gt.min_count] = 0.0
        keep = events & (disc != 0.0)
        group, n_groups = _groups(keys, m)
        totals = np.bincount(group, weights=np.where(events, counts, 0), minlength=n_groups)
        observed = np.bincount(group, weights=events & (counts > 0), minlength=n_groups)
        extra = np.zeros(n_groups)
        g, c, d = group[keep], counts[keep], disc[keep]
        while True:  # SRILM's denominator increments for contexts left without backoff mass
            probs = d * c / (totals[g] + extra[g])
            if gt.no_discount:
                break
            mass = np.bincount(g, weights=probs, minlength=n_groups)
            full = (mass > 1.0 - PROB_EPSILON) & (observed < vocab_size)
            if not full.any():
                break
            extra[full] += 1
        if m == 1:
            dense = _dense_unigrams(lm, keys[keep], probs)
            left = 1.0 - math.fsum(probs.tolist())  # exactly rounded (katz.py sums in corpus order: see the docstring)
            vocab = np.arange(len(words)) != BOS_ID
            zero = vocab & (dense == 0.0)
            if zero.any():
                dense[zero] = max(left, 0.0) / zero.sum()
            elif left > 0.0:
                dense[vocab] += left / vocab.sum()
            dense[BOS_ID] = 0.0
            lm.probs[0] = dense
            log.info("unigrams: %d words, %d unseen sharing %.3g of the mass", vocab.sum(), zero.sum(), max(left, 0))
        else:
            lm.keys[k], lm.probs[k] = (keys if keep.all() else keys[keep]), probs  # no copy when all are kept
        del events, disc, keep, group, g, c, d
    for m in range(1, order):
        context_backoff_weights(lm, m)
    return lm


def continuation_counts(tables: Sequence[CountTable], m: int) -> np.ndarray:
    """KN's adjusted counts of order m < N: distinct left extensions, raw counts for ``<s> ...``.

    Args:
        tables: the merged count tables.
        m: the order.

    Returns:
        [n_m] int64 adjusted counts aligned with ``tables[m-1]`` (0: not a suffix of any (m+1)-gram).
    """
    keys = np.asarray(tables[m - 1].keys())
    higher = np.asarray(tables[m].keys())
    suffixes = key_slice(higher, m + 1, 1, m + 1)
    suffixes = suffixes[_first_word(suffixes, m) != BOS_ID]
    vocab_size = int(_first_word(keys, m).max()) + 1 if len(keys) else 1
    if codes_fit(vocab_size, m):  # uint64 codes sort and search ~10x faster than byte strings
        suffixes = ids_to_codes(keys_to_ids(suffixes, m), vocab_size)
        keys = ids_to_codes(keys_to_ids(keys, m), vocab_size)
    uniq, cont = np.unique(suffixes, return_counts=True)
    del suffixes
    adjusted = np.zeros(len(keys), np.int64)
    idx = np.searchsorted(keys, uniq)
    adjusted[idx] = cont  # every suffix is itself a counted n-gram
    starts_bos = _first_word(np.asarray(tables[m - 1].keys()), m) == BOS_ID
    adjusted[starts_bos] = np.asarray(tables[m - 1].counts())[starts_bos]
    return adjusted


def estimate_kn_arrays(tables: Sequence[CountTable], words: list[str],
                       min_counts: Sequence[int] | None = None) -> ArrayLM:
    """Interpolated modified Kneser-Ney (``kneser_ney.estimate_kn``) over sorted count tables.

    Args:
        tables: ``tables[m-1]``: the merged order-m counts.
        words: id -> word (closed vocabulary).
        min_counts: raw-count cut-off per order for orders >= 2 (default: keep everything).

    Returns:
        The model with backoff weights.

    Raises:
        ValueError: cut-offs that decrease from order 2 up.
    """
    order = len(tables)
    mins = list(min_counts or [1])
    mins = [mins[min(k, len(mins) - 1)] for k in range(order)]
    _check_min_counts(mins)
    lm = _new_lm(tables, words)
    n_vocab = len(words) - 1
    for k in range(order):
        m = k + 1
        keys = np.asarray(tables[k].keys())
        raw = np.asarray(tables[k].counts())
        adjusted = raw if m == order else continuation_counts(tables, m)
        events = (last_word(keys, m) != BOS_ID) & (adjusted > 0)
        d1, d2, d3 = kn_discounts_from_count_of_counts(_count_of_counts(adjusted[events], 4), f"{m}-grams")
        disc = np.where(adjusted == 1, d1, np.where(adjusted == 2, d2, d3))
        group, n_groups = _groups(keys, m)
        totals = np.bincount(group, weights=np.where(events, adjusted, 0), minlength=n_groups)
        gamma = np.bincount(group, weights=np.where(events, disc, 0.0), minlength=n_groups)
        keep = events & (raw >= mins[k]) if m > 1 else events
        g, a = group[keep], adjusted[keep]
        if m == 1:
            lower = 1.0 / n_vocab
        else:
            lower = lower_order_prob(lm, keys[keep], m)
        probs = (a - disc[keep]) / totals[g] + gamma[g] / totals[g] * lower
        if m == 1:
            dense = _dense_unigrams(lm, keys[keep], probs)
            unseen = np.ones(len(words), bool)
            unseen[last_word(keys[keep], 1)] = False
            dense[unseen] = gamma[0] / totals[0] / n_vocab
            dense[BOS_ID] = 0.0
            lm.probs[0] = dense
        else:
            lm.keys[k], lm.probs[k] = (keys if keep.all() else keys[keep]), probs  # no copy when all are kept
            context_backoff_weights(lm, m - 1)  # the next order interpolates with this one through them
    return lm
