"""A word unigram from ``wordfreq``'s English frequencies: the offline ``openwebtext_1gram_lm_sil``.

The original ships a 1-gram over the CMU vocabulary estimated on OpenWebText (spec §1), which
cannot be downloaded here. ``wordfreq`` (an installed package) gives English word frequencies from
web, news, subtitles, Wikipedia ... text, which is the closest offline stand-in:

* vocabulary: every CMU dictionary word (the original's vocabulary), plus optionally the
  ``top_words`` most frequent ``wordfreq`` words (letters and inner apostrophes only) that are not
  in it, pronounced by the offline G2P;
* ``p(w)`` proportional to ``wordfreq``'s frequency, with words it does not list (e.g. ``a.``,
  rare names) floored at its smallest listed frequency, renormalised to ``1 - eos_prob``;
* ``p(</s>) = eos_prob`` (default 0.05: ~19 words per sentence), ``p(<s>) = 0`` (``-99``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from language_model.ngram.arpa import BackoffLM
from language_model.ngram.counts import BOS, EOS, UNK

log = logging.getLogger(__name__)

_PLAIN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
DEFAULT_EOS_PROB = 0.05


def wordfreq_vocabulary(top_words: int = 0, base: Iterable[str] | None = None) -> list[str]:
    """``base`` plus the ``top_words`` most frequent plain ``wordfreq`` English words outside it.

    Args:
        top_words: how many ``wordfreq`` words to consider (0: none).
        base: the base vocabulary (default: the CMU dictionary words).

    Returns:
        The sorted vocabulary.
    """
    import wordfreq

    from nejm_b2txt_utils.lexicon import cmu_dictionary

    vocab = set(cmu_dictionary() if base is None else base)
    if top_words > 0:
        extra = [
            w for w in wordfreq.top_n_list("en", top_words) if _PLAIN_WORD.fullmatch(w) and w not in vocab
        ]
        log.info("wordfreq: adding %d of its top %d words outside the base vocabulary", len(extra), top_words)
        vocab.update(extra)
    return sorted(vocab)


def wordfreq_unigram(words: Iterable[str], eos_prob: float = DEFAULT_EOS_PROB) -> BackoffLM:
    """A 1-gram :class:`BackoffLM` over ``words`` with ``wordfreq`` probabilities (see module doc).

    Args:
        words: the vocabulary.
        eos_prob: p(``</s>``).

    Returns:
        The 1-gram model.

    Raises:
        ValueError: ``eos_prob`` outside (0, 1) or an empty vocabulary.
    """
    import wordfreq

    if not 0.0 < eos_prob < 1.0:
        raise ValueError(f"eos_prob must be in (0, 1), got {eos_prob}")
    freqs = wordfreq.get_frequency_dict("en")
    floor = min(freqs.values())
    vocab = sorted(set(words) - {BOS, EOS, UNK})
    if not vocab:
        raise ValueError("wordfreq unigram: empty vocabulary")
    raw = [freqs.get(w, floor) for w in vocab]
    n_floor = sum(1 for w in vocab if w not in freqs)
    scale = (1.0 - eos_prob) / sum(raw)
    lm = BackoffLM(order=1, words=[BOS, EOS, UNK, *vocab])
    lm.probs[0] = {(i + 3,): f * scale for i, f in enumerate(raw)}
    lm.probs[0][(1,)] = eos_prob
    lm.probs[0][(0,)] = 0.0
    log.info(
        "wordfreq unigram: %d words (%d not listed by wordfreq, floored at %.3g)", len(vocab), n_floor, floor
    )
    return lm
