"""One-call trainers: a sentence stream -> an ARPA file (the small-corpus, in-memory path).

``write_arpa_katz`` (SRILM's default Good-Turing/Katz, the original recipe's smoothing) and ``write_arpa_kn``
(interpolated modified Kneser-Ney): ``counts.count_ngrams`` -> ``katz.estimate_katz`` /
``kneser_ney.estimate_kn`` -> optional ``prune.prune_relative_entropy`` -> ``arpa.write_arpa``. Corpora too
large for dicts of tuples go through ``sorted_counts.py`` / ``estimate_arrays.py`` / ``prune_arrays.py``
(``build_lm.py --streamed``), which give the same values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from language_model.ngram.arpa import BackoffLM, write_arpa
from language_model.ngram.counts import count_ngrams
from language_model.ngram.katz import estimate_katz
from language_model.ngram.kneser_ney import estimate_kn
from language_model.ngram.prune import prune_relative_entropy

log = logging.getLogger(__name__)


def _train(
    estimate,
    sentences: Iterable[str | Sequence[str]],
    order: int,
    path: str | os.PathLike,
    vocab: Iterable[str] | None,
    min_counts: Sequence[int] | None,
    prune: float,
    unpruned_path: str | os.PathLike | None,
    progress: bool,
) -> BackoffLM:
    counts = count_ngrams(sentences, order, vocab=vocab, progress=progress)
    if counts.n_tokens == 0:
        raise ValueError("corpus is empty: no sentence with at least one word")
    lm = estimate(counts, min_counts=min_counts)
    del counts
    if prune > 0.0:
        if unpruned_path is not None:
            write_arpa(lm, unpruned_path)
        prune_relative_entropy(lm, prune)
    write_arpa(lm, path)
    log.info("wrote %s: n-grams per order %s", path, lm.num_ngrams())
    return lm


def write_arpa_katz(
    sentences: Iterable[str | Sequence[str]],
    order: int,
    path: str | os.PathLike,
    *,
    vocab: Iterable[str] | None = None,
    min_counts: Sequence[int] | None = None,
    prune: float = 0.0,
    unpruned_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> BackoffLM:
    """Train a Good-Turing/Katz back-off LM (SRILM ``ngram-count`` defaults, see ``katz.py``) on a
    stream of sentences and write it to ``path`` as ARPA.

    Args:
        sentences: strings or word lists.
        order: n-gram order (>= 1).
        path: the ARPA file.
        vocab: closes the vocabulary (other words -> ``<unk>``; unseen vocabulary words share the left-over
            unigram mass).
        min_counts: ``min_counts[k]`` is the count cut-off of order k+1 (SRILM ``-gtNmin``; default the
            original recipe's: keep everything).
        prune: > 0 applies SRILM-style relative-entropy pruning with this threshold.
        unpruned_path: where the model before pruning goes (optional).
        progress: show tqdm progress.

    Returns:
        The (pruned) model.

    Raises:
        ValueError: ``order`` < 1.
    """
    return _train(estimate_katz, sentences, order, path, vocab, min_counts, prune, unpruned_path, progress)


def write_arpa_kn(
    sentences: Iterable[str | Sequence[str]],
    order: int,
    path: str | os.PathLike,
    *,
    vocab: Iterable[str] | None = None,
    min_counts: Sequence[int] | None = None,
    prune: float = 0.0,
    unpruned_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> BackoffLM:
    """As :func:`write_arpa_katz` with interpolated modified Kneser-Ney (see ``kneser_ney.py``).

    Args:
        sentences, order, path, vocab, min_counts, prune, unpruned_path, progress: as :func:`write_arpa_katz`.

    Returns:
        The (pruned) model.

    Raises:
        ValueError: ``order`` < 1.
    """
    return _train(estimate_kn, sentences, order, path, vocab, min_counts, prune, unpruned_path, progress)
