"""Error rates (PER / WER), greedy CTC decoding and bootstrap confidence intervals.

Aggregate rates are Σ edits / Σ reference length over all trials (the original's definition),
never a mean of per-trial rates. Edit distances come from ``kaldialign`` (unit costs, no overflow:
the original's uint8 DP matrix silently wrapped above 255 elements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kaldialign
import numpy as np

from nejm_b2txt_utils.phonemes import BLANK_ID

_EPS = "<eps>"


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two sequences of hashable tokens (words, phoneme ids...).

    Args:
        ref: reference tokens.
        hyp: hypothesis tokens.

    Returns:
        The minimum number of substitutions, insertions and deletions.
    """
    ref_tokens = [str(t) for t in ref]
    hyp_tokens = [str(t) for t in hyp]
    return int(kaldialign.edit_distance(ref_tokens, hyp_tokens)["total"])


# The original's name for the same function (it returned the raw edit count too).
calculate_error_rate = edit_distance


def edit_counts(ref: Sequence, hyp: Sequence) -> dict[str, int]:
    """Substitutions, deletions and insertions of a minimum-edit alignment of ``hyp`` to ``ref``.

    Returns:
        ``{"sub", "del", "ins", "total"}`` counts (``total`` = :func:`edit_distance`).
    """
    d = kaldialign.edit_distance([str(t) for t in ref], [str(t) for t in hyp])
    return {"sub": int(d["sub"]), "del": int(d["del"]), "ins": int(d["ins"]), "total": int(d["total"])}


def grouped_bootstrap_ci(edits: np.ndarray, ref_lens: np.ndarray, groups: Sequence, n_resamples: int = 10_000,
                         seed: int | None = 0) -> tuple[float, float]:
    """95 % CI of Σedits/Σref resampling whole groups (e.g. recording days) with replacement.

    Trials of one day share that day's signal quality, so they are not independent draws: resampling days
    gives the wider, honest interval when the question is "how would another set of days score".

    Args:
        edits: ``[N]`` edit counts per trial; ref_lens: ``[N]`` reference lengths; groups: ``[N]`` group labels.
        n_resamples: bootstrap resamples; seed: RNG seed (``None``: unseeded).

    Returns:
        ``(low, high)`` fractions; NaNs for no items.
    """
    edits = np.asarray(edits, dtype=np.float64)
    ref_lens = np.asarray(ref_lens, dtype=np.float64)
    if edits.size == 0:
        return float("nan"), float("nan")
    _, group_idx = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    n_groups = int(group_idx.max()) + 1
    per_group_edits = np.bincount(group_idx, weights=edits, minlength=n_groups)  # (G,)
    per_group_lens = np.bincount(group_idx, weights=ref_lens, minlength=n_groups)  # (G,)
    return bootstrap_ci(per_group_edits, per_group_lens, n_resamples, seed)


@dataclass(frozen=True)
class ErrorRate:
    """Aggregate error rate with its bootstrap 95 % CI and per-item rates (NaN for empty refs)."""

    rate: float
    ci_low: float
    ci_high: float
    n_edits: int
    n_ref: int
    per_item: list[float]

    def as_tuple(self) -> tuple[float, float, float, list[float]]:
        """``(agg, ci_low, ci_high, per_item)`` as the original's ``calculate_aggregate_error_rate``.

        Returns:
            The tuple (rates are fractions, not percent).
        """
        return self.rate, self.ci_low, self.ci_high, self.per_item


def bootstrap_ci(
    edits: np.ndarray, ref_lens: np.ndarray, n_resamples: int = 10_000, seed: int | None = 0
) -> tuple[float, float]:
    """95 % CI of Σedits/Σref by resampling items with replacement (percentiles 2.5 / 97.5).

    Seeded by default so reports are reproducible (the original was unseeded).

    Args:
        edits: ``[N]`` edit counts per item.
        ref_lens: ``[N]`` reference lengths per item.
        n_resamples: bootstrap resamples.
        seed: RNG seed (``None``: unseeded).

    Returns:
        ``(low, high)`` as fractions; NaNs for no items.
    """
    edits = np.asarray(edits, dtype=np.float64)
    ref_lens = np.asarray(ref_lens, dtype=np.float64)
    if edits.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, edits.size, size=(n_resamples, edits.size))
    num = edits[idx].sum(axis=1)
    den = ref_lens[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(den > 0, num / den, np.nan)
    lo, hi = np.nanpercentile(rates, [2.5, 97.5])
    return float(lo), float(hi)


def aggregate_error_rate(
    refs: Sequence[Sequence], hyps: Sequence[Sequence], n_resamples: int = 10_000, seed: int | None = 0
) -> ErrorRate:
    """Aggregate error rate over paired token sequences, with a bootstrap CI.

    Args:
        refs: reference token sequences.
        hyps: hypothesis token sequences, parallel to ``refs``.
        n_resamples: bootstrap resamples (0: no CI, the bounds equal the rate).
        seed: RNG seed.

    Returns:
        :class:`ErrorRate` (Σedits / Σref lengths; NaN when every reference is empty).

    Raises:
        ValueError: the lists differ in length.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps differ in length: {len(refs)} vs {len(hyps)}")
    edits = np.array([edit_distance(r, h) for r, h in zip(refs, hyps)], dtype=np.int64)
    ref_lens = np.array([len(r) for r in refs], dtype=np.int64)
    per_item = [float(e / n) if n > 0 else float("nan") for e, n in zip(edits, ref_lens)]
    n_ref = int(ref_lens.sum())
    rate = float(edits.sum() / n_ref) if n_ref > 0 else float("nan")
    lo, hi = bootstrap_ci(edits, ref_lens, n_resamples, seed) if n_resamples > 0 else (rate, rate)
    return ErrorRate(rate, lo, hi, int(edits.sum()), n_ref, per_item)


def calculate_aggregate_error_rate(r: Sequence[Sequence], h: Sequence[Sequence]):
    """The original's signature.

    Args:
        r: reference token sequences.
        h: hypothesis token sequences.

    Returns:
        ``(agg, ci_low, ci_high, per_item_rates)``.
    """
    return aggregate_error_rate(r, h).as_tuple()


def word_error_rate(ref_sentences: Sequence[str], hyp_sentences: Sequence[str], text_norm: str = "b2txt",
                    **kw) -> ErrorRate:
    """Aggregate WER (with a bootstrap CI) after normalising both sides alike.

    Args:
        ref_sentences, hyp_sentences: parallel sentences as written / as decoded.
        text_norm: ``"b2txt"`` (:func:`nejm_b2txt_utils.text.normalize_text`, the LM corpus's and the labels'
            normalisation) or ``"original"`` (the original evaluator's exact ``remove_punctuation``, for
            reproducing published numbers); see ``nejm_b2txt_utils.text.TEXT_NORMS``.
        kw: passed to :func:`aggregate_error_rate` (``n_resamples``, ``seed``).

    Returns:
        :class:`ErrorRate` over word tokens.

    Raises:
        ValueError: unknown ``text_norm`` or lists of different lengths.
    """
    from nejm_b2txt_utils.text import normalize_for_wer

    refs = [normalize_for_wer(s, text_norm).split() for s in ref_sentences]
    hyps = [normalize_for_wer(s, text_norm).split() for s in hyp_sentences]
    return aggregate_error_rate(refs, hyps, **kw)


def ctc_greedy_decode(logits: np.ndarray, length: int | None = None, blank: int = BLANK_ID) -> np.ndarray:
    """Best-path CTC decode of ``[T, C]`` logits: argmax, collapse repeats, then drop blanks.

    This is the trainer's (correct) order: "A blank A" stays "A A".

    Args:
        logits: ``[T, C]`` scores (any monotone transform of probabilities).
        length: valid frames (trims padding); ``None``: all.
        blank: the blank class id.

    Returns:
        ``[N]`` int64 class ids.

    Raises:
        ValueError: ``logits`` is not 2-D.
    """
    arr = np.asarray(logits)
    if arr.ndim != 2:
        raise ValueError(f"logits: expected shape [T, C], got {arr.shape}")
    if length is not None:
        arr = arr[: int(length)]
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    best = arr.argmax(axis=-1)
    keep = np.ones(best.shape[0], dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    collapsed = best[keep]
    return collapsed[collapsed != blank].astype(np.int64)


def logits_to_phonemes(logits: np.ndarray) -> list[str]:
    """The original helper (LM-order logits -> symbols), without its crash on empty output.

    Args:
        logits: ``[T, 41]`` LM-order logits.

    Returns:
        The greedy phoneme symbols.
    """
    from nejm_b2txt_utils.phonemes import LM_ORDER

    ids = ctc_greedy_decode(logits)
    return [LM_ORDER[i] for i in ids]
