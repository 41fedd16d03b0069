"""Back-off n-gram models: the in-memory form, backoff weights, ARPA reading/writing, scoring.

The one-call trainers (sentences -> ARPA file) are in ``train.py``; the estimators (``katz.py``,
``kneser_ney.py``, ``prune.py``) import this module, never the other way round.

Probabilities and backoff weights are kept linear (not log) while estimating; the ARPA file holds
log10 values, with ``-99`` for probability 0 (``<s>``), as SRILM writes it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from language_model.ngram.counts import BOS, EOS, UNK, NGram
from nejm_b2txt_utils.atomic_io import atomic_open

log = logging.getLogger(__name__)

#: SRILM's ``Prob_Epsilon``: tolerance for "no probability mass left".
PROB_EPSILON = 3e-6
LOG10_ZERO = -99.0


@dataclass
class BackoffLM:
    """``probs[k]``: explicit (k+1)-gram -> p(w | context); ``bows[k]``: (k+1)-gram context -> bow."""

    order: int
    words: list[str]  # id -> word
    probs: list[dict[NGram, float]] = field(default_factory=list)
    bows: list[dict[NGram, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.probs = self.probs or [{} for _ in range(self.order)]
        self.bows = self.bows or [{} for _ in range(self.order)]

    def prob(self, word: int, context: Sequence[int] = ()) -> float:
        """p(word | context) by back-off.

        Args:
            word: word id.
            context: ids of the preceding words, most recent last (longer than ``order - 1`` is truncated).

        Returns:
            The linear probability (0 when the word has no unigram probability, e.g. ``<s>``).
        """
        ctx = tuple(context[max(0, len(context) - self.order + 1) :]) if self.order > 1 else ()
        weight = 1.0
        while True:
            p = self.probs[len(ctx)].get((*ctx, word))
            if p is not None:
                return weight * p
            if not ctx:
                return 0.0
            weight *= self.bows[len(ctx) - 1].get(ctx, 1.0)
            ctx = ctx[1:]

    def word_ids(self) -> dict[str, int]:
        """Word -> id.

        Returns:
            ``{word: id}`` for every word of the model.
        """
        return {w: i for i, w in enumerate(self.words)}

    def sentence_logprob(self, words: Sequence[str], eos: bool = True) -> float:
        """Natural-log probability of a sentence after ``<s>``.

        Args:
            words: the words (outside the vocabulary they score as ``<unk>``, or -inf without one).
            eos: include ``p(</s> | ...)``.

        Returns:
            ln P (nats).
        """
        index = self.word_ids()
        unk = index.get(UNK)
        ids = [index.get(w, unk) for w in words] + ([index[EOS]] if eos else [])
        history = [index[BOS]]
        total = 0.0
        for i in ids:
            p = self.prob(i, history) if i is not None else 0.0
            if p <= 0.0:
                return -math.inf
            total += math.log(p)
            history.append(i)
        return total

    def num_ngrams(self) -> list[int]:
        """Explicit n-grams per order.

        Returns:
            ``[n_1, ..., n_order]``.
        """
        return [len(p) for p in self.probs]


def backoff_weight(numerator: float, denominator: float) -> tuple[float, float | None]:
    """SRILM's ``computeBOW`` rules for one context.

    Args:
        numerator: ``1 - sum_w p(w|c)`` over the context's explicit words.
        denominator: ``1 - sum_w p(w|c')`` over the same words in the shorter context.

    Returns:
        ``(bow, scale)``: ``scale`` (if not None) is the factor the context's explicit probabilities must be
        multiplied by when the backoff distribution has no mass left (they then sum to 1 and the bow is
        irrelevant).
    """
    if -PROB_EPSILON < numerator < 0.0:
        numerator = 0.0
    if -PROB_EPSILON < denominator < 0.0:
        denominator = 0.0
    if denominator == 0.0 and numerator > PROB_EPSILON:
        return 1.0, 1.0 / (1.0 - numerator)
    if numerator < 0.0:
        raise ValueError(f"explicit probabilities of a context sum to {1 - numerator} > 1")
    if denominator <= 0.0:
        if numerator > PROB_EPSILON:
            raise ValueError(f"backoff denominator {denominator} <= 0 with numerator {numerator}")
        return 1.0, None
    return numerator / denominator, None


def compute_backoff_weights(lm: BackoffLM) -> None:
    """Compute the backoff weight of every context so that each context's distribution sums to 1.

    ``bow(c) = (1 - sum_w p(w|c)) / (1 - sum_w p(w|c'))`` over explicit words ``w``. Contexts of explicit
    n-grams that are missing as n-grams themselves are first added with their back-off probability (SRILM's
    ``fixupProbs``; the ARPA format needs them, and adding them leaves every distribution unchanged). Orders
    are processed lowest first, as higher ones depend on them.

    Args:
        lm: the model, changed in place (``bows`` and possibly ``probs``).
    """
    missing: list[set[NGram]] = [set() for _ in range(lm.order)]
    for k in range(lm.order - 1, 0, -1):
        for ngram in [*lm.probs[k], *missing[k]]:
            if ngram[:-1] not in lm.probs[k - 1]:
                missing[k - 1].add(ngram[:-1])
    if any(missing):
        log.info("inserting %d context n-grams missing from the model", sum(map(len, missing)))
    for clen in range(lm.order):
        if clen > 0:
            lm.bows[clen - 1] = context_backoff_weights(lm, clen)
        # now p(w | ctx) by back-off is final for contexts of length clen: fill the missing ones
        for ngram in sorted(missing[clen]):
            lm.probs[clen][ngram] = lm.prob(ngram[-1], ngram[:-1])


def context_backoff_weights(lm: BackoffLM, clen: int) -> dict[NGram, float]:
    """Backoff weights of the contexts of length ``clen`` (lower orders must be final).

    Args:
        lm: the model.
        clen: context length (1 .. order - 1).

    Returns:
        ``{context ids: bow}``.
    """
    num: dict[NGram, float] = {}
    den: dict[NGram, float] = {}
    for ngram, p in lm.probs[clen].items():
        ctx = ngram[:-1]
        num[ctx] = num.get(ctx, 1.0) - p
        den[ctx] = den.get(ctx, 1.0) - lm.prob(ngram[-1], ctx[1:])
    bows: dict[NGram, float] = {}
    scales: dict[NGram, float] = {}
    for ctx, n in num.items():
        bows[ctx], scale = backoff_weight(n, den[ctx])
        if scale is not None:
            scales[ctx] = scale
    if scales:
        log.warning("%d contexts have no backoff mass left; their probabilities were rescaled", len(scales))
        for ngram in lm.probs[clen]:
            if ngram[:-1] in scales:
                lm.probs[clen][ngram] *= scales[ngram[:-1]]
    return bows


# --------------------------------------------------------------------------- ARPA files
def _log10(p: float) -> float:
    return math.log10(p) if p > 0.0 else LOG10_ZERO


def write_arpa(lm: BackoffLM, path: str | os.PathLike) -> Path:
    """Write ``lm`` as an ARPA file (log10 values, ``-99`` for probability 0), atomically.

    Args:
        lm: the model.
        path: the output file.

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    words = lm.words
    with atomic_open(path) as f:
        f.write("\\data\\\n")
        f.writelines(f"ngram {k + 1}={len(lm.probs[k])}\n" for k in range(lm.order))
        for k in range(lm.order):
            f.write(f"\n\\{k + 1}-grams:\n")
            bows = lm.bows[k] if k < lm.order - 1 else {}
            for ngram in sorted(lm.probs[k]):
                text = " ".join(words[i] for i in ngram)
                line = f"{_log10(lm.probs[k][ngram]):.7g}\t{text}"
                bow = bows.get(ngram)
                if bow is not None:
                    line += f"\t{_log10(bow):.7g}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    return path


def read_arpa(path: str | os.PathLike) -> BackoffLM:
    """Read an ARPA file into a :class:`BackoffLM` (ids: ``<s>``, ``</s>``, ``<unk>`` first).

    Args:
        path: the ARPA file (log10 values).

    Returns:
        The model (linear probabilities and backoff weights).

    Raises:
        ValueError: not an ARPA file, or a malformed n-gram line (message: file, line).
    """
    words: list[str] = [BOS, EOS, UNK]
    index = {w: i for i, w in enumerate(words)}
    declared: dict[int, int] = {}
    lm: BackoffLM | None = None
    section = -1  # -1 before \data\, 0 in \data\, k in \k-grams:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            if s == "\\data\\":
                section = 0
            elif s == "\\end\\":
                break
            elif s.startswith("\\") and s.endswith("-grams:"):
                section = int(s[1:].split("-")[0])
                if lm is None:
                    lm = BackoffLM(order=max(declared), words=words)
            elif section == 0 and s.startswith("ngram "):
                k, _, cnt = s[6:].partition("=")
                declared[int(k)] = int(cnt)
            elif section > 0 and lm is not None:
                fields = s.split()
                if len(fields) not in (section + 1, section + 2):
                    raise ValueError(f"{path}:{n}: expected a {section}-gram line, got {s!r}")
                ids = []
                for w in fields[1 : section + 1]:
                    if w not in index:
                        index[w] = len(words)
                        words.append(w)
                    ids.append(index[w])
                key = tuple(ids)
                logp = float(fields[0])
                lm.probs[section - 1][key] = 0.0 if logp <= LOG10_ZERO else 10.0**logp
                if len(fields) == section + 2:
                    lm.bows[section - 1][key] = 10.0 ** float(fields[-1])
    if lm is None:
        raise ValueError(f"{path}: not an ARPA file (no \\data\\ / n-gram sections)")
    return lm
