"""A back-off n-gram LM held as sorted arrays (one per order), with vectorised back-off lookups.

The array counterpart of ``arpa.BackoffLM`` for models too large for Python dicts. Order m (index m-1) is
``keys[m-1]`` (sorted ``S{4m}`` keys, :mod:`~language_model.ngram.sorted_counts`), ``probs[m-1]`` (linear
p(w | h)) and, below the highest order, ``bows[m-1]`` (linear backoff weight of the m-gram as a context, 1.0
where it has no children) with ``has_bow[m-1]`` (it has children: the ARPA lists its weight). Order 1 is dense:
entry i is word id i (``<s>`` with probability 0), as in the n-gram store.

The rules are ``arpa.py``'s (SRILM's ``computeBOW``): :func:`context_backoff_weights` is
``arpa.context_backoff_weights`` over arrays, and :func:`write_arpa_arrays` writes what ``arpa.write_arpa``
writes for the same model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from language_model.ngram.arpa import LOG10_ZERO, PROB_EPSILON
from language_model.ngram.counts import BOS_ID, EOS_ID
from language_model.ngram.sorted_counts import (
    codes_fit,
    ids_to_codes,
    ids_to_keys,
    key_slice,
    keys_to_ids,
    last_word,
)
from nejm_b2txt_utils.atomic_io import atomic_open

log = logging.getLogger(__name__)


@dataclass
class ArrayLM:
    """Per-order sorted arrays (see the module docstring); ``words[i]`` is word id i."""

    order: int
    words: list[str]
    keys: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    bows: list[np.ndarray] = field(default_factory=list)
    has_bow: list[np.ndarray] = field(default_factory=list)
    code_cache: dict = field(default_factory=dict, repr=False)  # order -> (keys, their uint64 codes)

    def num_ngrams(self) -> list[int]:
        """Explicit n-grams per order.

        Returns:
            ``[n_1, ..., n_order]``.
        """
        return [len(k) for k in self.keys]


def unigram_keys(vocab_size: int) -> np.ndarray:
    """The dense order-1 keys.

    Args:
        vocab_size: V.

    Returns:
        [V] ``S4`` keys of ids 0..V-1.
    """
    return ids_to_keys(np.arange(vocab_size, dtype=np.uint32)[:, None])  # [V, 1] -> [V]


def find(lm: ArrayLM, order: int, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where n-grams are in an order's arrays.

    Args:
        lm: the model (orders up to ``order`` present).
        order: m.
        queries: [n] order-m keys.

    Returns:
        ``(index [n] int64, found [n] bool)`` (index is meaningless where not found).
    """
    if order == 1:
        idx = last_word(queries, 1).astype(np.int64)
        return idx, idx < len(lm.keys[0])
    table = lm.keys[order - 1]
    vocab_size = len(lm.words)
    if codes_fit(vocab_size, order):  # search uint64 codes (byte strings compare ~50x slower)
        cached = lm.code_cache.get(order)
        if cached is None or cached[0] is not table:
            cached = lm.code_cache[order] = (table, ids_to_codes(keys_to_ids(table, order), vocab_size))
        table, queries = cached[1], ids_to_codes(keys_to_ids(queries, order), vocab_size)
        # sorted queries search ~4x faster (numpy starts each search from the previous result)
        by_value = np.argsort(queries)
        idx = np.empty(len(queries), np.int64)
        idx[by_value] = np.searchsorted(table, queries[by_value])
    else:
        idx = np.searchsorted(table, queries)
    found = idx < len(table)
    found[found] = table[idx[found]] == queries[found]
    return idx, found


def backoff_prob(lm: ArrayLM, queries: np.ndarray, order: int) -> np.ndarray:
    """p(w | h) by back-off for n-grams (h, w) of one order (``BackoffLM.prob`` over arrays).

    Args:
        lm: the model (orders up to ``order`` final, with the backoff weights of orders below it).
        queries: [n] keys of order ``order``.
        order: m (<= lm.order).

    Returns:
        [n] float64 linear probabilities.
    """
    if order == 1:
        return lm.probs[0][last_word(queries, 1)]
    idx, found = find(lm, order, queries)
    out = np.empty(len(queries))
    out[found] = lm.probs[order - 1][idx[found]]
    missing = np.flatnonzero(~found)
    if len(missing):
        sub = queries[missing]
        cidx, cfound = find(lm, order - 1, key_slice(sub, order, 0, order - 1))
        weight = np.ones(len(sub))
        weight[cfound] = lm.bows[order - 2][cidx[cfound]]
        out[missing] = weight * backoff_prob(lm, key_slice(sub, order, 1, order), order - 1)
    return out


#: Queries looked up per block (bounds the temporary arrays of a lookup to ~0.5 GB).
BLOCK = 1 << 23


def lower_order_prob(lm: ArrayLM, keys: np.ndarray, order: int) -> np.ndarray:
    """p(w | h') by back-off for every n-gram (h, w) of an order, h' = h without its first word (in blocks).

    Args:
        lm: the model (orders below ``order`` final).
        keys: [n] keys of order ``order`` >= 2.
        order: m.

    Returns:
        [n] float64 linear probabilities.
    """
    out = np.empty(len(keys))
    for a in range(0, len(keys), BLOCK):
        out[a : a + BLOCK] = backoff_prob(lm, key_slice(keys[a : a + BLOCK], order, 1, order), order - 1)
    return out


def parent_index(lm: ArrayLM, order: int, keys: np.ndarray | None = None) -> np.ndarray:
    """The context entry (order m-1) of every entry of order m.

    Args:
        lm: the model.
        order: m >= 2.
        keys: order-m keys (default: the model's).

    Returns:
        [n_m] int64 indices into order m-1 (non-decreasing for sorted keys).

    Raises:
        ValueError: an n-gram's context is not in the model (the ARPA format needs it).
    """
    keys = lm.keys[order - 1] if keys is None else keys
    out = np.empty(len(keys), np.int64)
    for a in range(0, len(keys), BLOCK):
        idx, found = find(lm, order - 1, key_slice(keys[a : a + BLOCK], order, 0, order - 1))
        if not found.all():
            raise ValueError(f"{int(np.count_nonzero(~found))} {order}-grams have no {order - 1}-gram context")
        out[a : a + BLOCK] = idx
    return out


def backoff_weights_from_sums(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``arpa.backoff_weight`` over arrays.

    Args:
        num: [n] ``1 - sum_w p(w|c)`` per context.
        den: [n] ``1 - sum_w p(w|c')`` per context.

    Returns:
        ``(bow [n], scale [n])``: scale is the factor for the context's probabilities (1.0: none).

    Raises:
        ValueError: probabilities of a context sum to more than 1, or a backoff denominator <= 0 with mass.
    """
    num = np.where((num > -PROB_EPSILON) & (num < 0.0), 0.0, num)
    den = np.where((den > -PROB_EPSILON) & (den < 0.0), 0.0, den)
    rescale = (den == 0.0) & (num > PROB_EPSILON)
    if np.any(num[~rescale] < 0.0):
        raise ValueError(f"explicit probabilities of a context sum to {1 - num[~rescale].min()} > 1")
    if np.any((den <= 0.0) & ~rescale & (num > PROB_EPSILON)):
        raise ValueError("backoff denominator <= 0 for a context with probability mass left")
    bow = np.where(den > 0.0, num / np.where(den > 0.0, den, 1.0), 1.0)
    scale = np.where(rescale, 1.0 / np.where(rescale, 1.0 - num, 1.0), 1.0)
    return np.where(rescale, 1.0, bow), scale


def context_backoff_weights(lm: ArrayLM, order: int) -> None:
    """Set ``bows[order-1]``/``has_bow[order-1]`` from the (order+1)-grams (lower orders must be final);
    contexts with no backoff mass left get their children's probabilities rescaled, as ``arpa.py``.

    Args:
        lm: the model, changed in place.
        order: the context order m (1 .. lm.order - 1).
    """
    child_keys = lm.keys[order]
    n_ctx = len(lm.keys[order - 1])
    parent = parent_index(lm, order + 1)
    lower = lower_order_prob(lm, child_keys, order + 1)
    num = 1.0 - np.bincount(parent, weights=lm.probs[order], minlength=n_ctx)
    den = 1.0 - np.bincount(parent, weights=lower, minlength=n_ctx)
    has = np.bincount(parent, minlength=n_ctx) > 0
    bow, scale = backoff_weights_from_sums(num, den)
    bow[~has] = 1.0
    scale[~has] = 1.0
    if np.any(scale != 1.0):
        log.warning("%d contexts have no backoff mass left; their probabilities were rescaled",
                    int(np.count_nonzero(scale != 1.0)))  # fmt: skip
        lm.probs[order] = lm.probs[order] * scale[parent]
    lm.bows[order - 1], lm.has_bow[order - 1] = bow, has


def context_logprob(lm: ArrayLM) -> list[np.ndarray]:
    """ln P(g) of every n-gram g as a history, by the chain rule (a leading ``<s>`` counts as ``p(</s>)``,
    as SRILM and ``prune.py`` do).

    Args:
        lm: the model (explicit n-grams: every entry's prefix is an entry).

    Returns:
        ``[lnP order 1 [n_1], ..., order N-1]`` (-inf where a probability is 0).
    """
    with np.errstate(divide="ignore"):
        uni = np.log(lm.probs[0])
        uni[BOS_ID] = np.log(lm.probs[0][EOS_ID])
        out = [uni]
        for m in range(2, lm.order):
            out.append(out[-1][parent_index(lm, m)] + np.log(lm.probs[m - 1]))
    return out


# --------------------------------------------------------------------------- ARPA
def _log10_text(values: np.ndarray) -> list[str]:
    with np.errstate(divide="ignore"):
        logs = np.where(values > 0.0, np.log10(np.maximum(values, 1e-300)), LOG10_ZERO)
    return [f"{v:.7g}" for v in logs.tolist()]


def write_arpa_arrays(lm: ArrayLM, path: str | os.PathLike, block: int = 200_000) -> Path:
    """Write the model as an ARPA file (what ``arpa.write_arpa`` writes for the same model), atomically.

    Args:
        lm: the model.
        path: the output file.
        block: n-grams formatted at a time.

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    words = np.array(lm.words, dtype=object)
    with atomic_open(path) as f:
        f.write("\\data\\\n")
        f.writelines(f"ngram {m}={len(lm.keys[m - 1])}\n" for m in range(1, lm.order + 1))
        for m in range(1, lm.order + 1):
            f.write(f"\n\\{m}-grams:\n")
            for start in range(0, len(lm.keys[m - 1]), block):
                stop = start + block
                ids = keys_to_ids(lm.keys[m - 1][start:stop], m)  # [b, m]
                text = words[ids[:, 0]]
                for j in range(1, m):
                    text = text + " " + words[ids[:, j]]
                logp = _log10_text(np.asarray(lm.probs[m - 1][start:stop]))
                if m < lm.order:
                    has = np.asarray(lm.has_bow[m - 1][start:stop])
                    bows = _log10_text(np.asarray(lm.bows[m - 1][start:stop]))
                    f.writelines(f"{p}\t{t}\t{b}\n" if h else f"{p}\t{t}\n"
                                 for p, t, b, h in zip(logp, text, bows, has.tolist()))  # fmt: skip
                else:
                    f.writelines(f"{p}\t{t}\n" for p, t in zip(logp, text))
        f.write("\n\\end\\\n")
    return path
