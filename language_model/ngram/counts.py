"""Streaming n-gram counting over a sentence stream (SRILM ``ngram-count -text`` semantics).

Every sentence is wrapped as ``<s> w1 .. wn </s>``; n-grams of every order 1..N that end inside the
sentence are counted (``<s>`` is counted as a unigram but is a non-event). Words are interned to
integer ids (id 0 ``<s>``, 1 ``</s>``, 2 ``<unk>``) so that 10M-word corpora fit comfortably in RAM;
counting uses ``collections.Counter.update`` over zipped id lists, which runs in C.
With a closed vocabulary (``vocab=...``) out-of-vocabulary words map to ``<unk>`` (SRILM ``-unk
-map-unk "<unk>" -limit-vocab``); with ``vocab=None`` every word seen is in the vocabulary.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2

NGram = tuple[int, ...]


@dataclass
class NGramCounts:
    """Counts per order: ``counts[k]`` maps a (k+1)-tuple of word ids to its count."""

    order: int
    words: list[str]  # id -> word; ids 0, 1, 2 are <s>, </s>, <unk>
    counts: list[Counter] = field(default_factory=list)
    n_sentences: int = 0
    n_tokens: int = 0  # words, excluding <s> / </s>
    n_oov: int = 0  # tokens mapped to <unk>
    closed_vocab: bool = False  # True: every word of ``words`` is in the LM vocabulary, seen or not

    def word_id(self) -> dict[str, int]:
        """Word -> id.

        Returns:
            ``{word: id}`` (``<s>`` 0, ``</s>`` 1, ``<unk>`` 2).
        """
        return {w: i for i, w in enumerate(self.words)}


def event_vocabulary(counts: NGramCounts) -> list[int]:
    """Word ids that get unigram probability mass: all but ``<s>``; ``<unk>`` only with a closed
    vocabulary (SRILM ``-unk``) or when it occurs.

    Args:
        counts: the counts.

    Returns:
        Sorted word ids.
    """
    return [
        i
        for i in range(len(counts.words))
        if i != BOS_ID and (i != UNK_ID or counts.closed_vocab or (UNK_ID,) in counts.counts[0])
    ]


def _sentence_words(sentence: str | Sequence[str]) -> Sequence[str]:
    return sentence.split() if isinstance(sentence, str) else sentence


def count_ngrams(
    sentences: Iterable[str | Sequence[str]],
    order: int,
    vocab: Iterable[str] | None = None,
    progress: bool = True,
) -> NGramCounts:
    """Count n-grams of orders 1..``order`` over a stream of sentences.

    Sentences that are empty after splitting are skipped.

    Args:
        sentences: strings (split on whitespace) or word lists.
        order: highest order (>= 1).
        vocab: closes the vocabulary: its words all become unigram candidates (zero-count words get
            probability mass from the estimator, as SRILM's ``-vocab``) and other words map to ``<unk>``.
        progress: show tqdm progress.

    Returns:
        The counts (plus sentence, token and OOV totals).

    Raises:
        ValueError: ``order`` < 1.
    """
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    words = [BOS, EOS, UNK]
    closed = vocab is not None
    if closed:
        words += sorted(set(vocab) - {BOS, EOS, UNK})
    word_id = {w: i for i, w in enumerate(words)}
    result = NGramCounts(order=order, words=words, closed_vocab=closed)
    result.counts = [Counter() for _ in range(order)]
    counters = result.counts
    bar = tqdm(desc="counting n-grams", unit=" words", unit_scale=True, disable=not progress, mininterval=2.0)
    n_tokens = n_oov = n_sent = 0
    for sentence in sentences:
        toks = _sentence_words(sentence)
        if not toks:
            continue
        ids = [BOS_ID]
        for w in toks:
            i = word_id.get(w)
            if i is None:
                if closed:
                    i = UNK_ID
                    n_oov += 1
                else:
                    i = word_id[w] = len(words)
                    words.append(w)
            ids.append(i)
        ids.append(EOS_ID)
        for k in range(order):
            if k == 0:
                counters[0].update(zip(ids))
            else:
                counters[k].update(zip(*(ids[j:] for j in range(k + 1))))
        n_sent += 1
        n_tokens += len(toks)
        if n_sent % 4096 == 0:
            bar.update(n_tokens - bar.n)
    bar.update(n_tokens - bar.n)
    bar.close()
    result.n_sentences, result.n_tokens, result.n_oov = n_sent, n_tokens, n_oov
    log.info(
        "counted %d sentences, %d words (%d mapped to <unk>); distinct n-grams per order: %s",
        n_sent,
        n_tokens,
        n_oov,
        [len(c) for c in counters],
    )
    return result
