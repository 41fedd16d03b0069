"""The one candidate-sentence type of LM decoding, from the lattice to the ``scoring`` field.

Every decoding stage (lattice n-best, n-gram rescoring, augmentation, causal-LM rescoring; see
``language_model/decoding/decode.py``) takes and returns a best-first list of :class:`Hypothesis`, and the
protocol (:func:`nejm_b2txt_utils.redis_protocol.format_scoring`) writes the same objects as the five
``scoring`` numbers of the original (sentence, acoustic, n-gram, LLM, total).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["Hypothesis"]


@dataclass
class Hypothesis:
    """One candidate sentence with its scores (natural-log units, nats).

    Attributes:
        sentence: lower-case words separated by single spaces.
        ac: unscaled acoustic log-likelihood (sum over frames of the penalised CTC log-probabilities).
        lm: n-gram (+ lexicon silence) log-probability.
        llm: causal-LM log-probability (0.0 until the causal-LM stage scores it).
        total: the score the current stage ranks by (``acoustic_scale*ac + lm`` after the WFST stages,
            ``acoustic_scale*ac + (1-alpha)*lm + alpha*llm`` after the causal LM); ``None`` before any stage.
        words: word ids in ``words.txt`` (empty for sentences made by augmentation); not compared.
    """

    sentence: str
    ac: float
    lm: float
    llm: float = 0.0
    total: float | None = None
    words: tuple[int, ...] = field(default=(), compare=False)

    def ngram_total(self, acoustic_scale: float) -> float:
        """``acoustic_scale * ac + lm``: the total of the WFST stages (the original's score without the LLM).

        Args:
            acoustic_scale: the server's ``acoustic_scale``.

        Returns:
            The score in nats.
        """
        return acoustic_scale * self.ac + self.lm

    def ngram_scored(self, acoustic_scale: float) -> Hypothesis:
        """A copy ranked by the WFST stages' score (``total`` = :meth:`ngram_total`).

        Args:
            acoustic_scale: the server's ``acoustic_scale``.

        Returns:
            A new :class:`Hypothesis`; this one is unchanged.
        """
        return replace(self, total=self.ngram_total(acoustic_scale))
