"""The finalize pipeline as named stages over one hypothesis type (spec §2.4 step 5, §4.4-§4.9).

Each stage takes and returns a best-first list of :class:`~nejm_b2txt_utils.hypothesis.Hypothesis`
whose ``total`` is the score that stage ranks by::

    nbest = nbest_decoding(decoder)                          # lattice -> distinct word sequences
    nbest = exact_ngram_scores(grammar, nbest, params)       # exact_ngram=1 (added): the ARPA's own scores
    nbest = rescore_with_ngram(rescorer, nbest, params)      # rescore=1: unpruned G_no_prune.fst
    # with an ngram_store/ in the LM folder both score with the full LM it holds, exactly
    nbest = augment(nbest, params)                           # nbest > 1: single-word swaps
    best, nbest = rescore_with_causal_lm(scorer, nbest, params, context)   # do_opt=1

:func:`finalize_utterance` runs them as the original server did and returns the three fields of
``remote_lm_output_final``.

Fixed versus the original (spec §2.8): ``nbest 1`` crashed at finalize (``nbest_out`` undefined); here the
1-best is scored like any n-best (no augmentation, as the original only augments when ``nbest > 1``), and
``scoring`` is always sent; sentences carry no leading space (the C++ ``ProcessBlank`` left one).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from language_model.decoding.augment import augment_nbest
from language_model.decoding.llm_rescore import CausalLMScorer, rescore_nbest
from language_model.decoding.ngram_rescore import GrammarFst, NgramRescorer, StoreTarget, exact_rescore
from language_model.decoding.wfst import CtcWfstDecoder
from nejm_b2txt_utils.hypothesis import Hypothesis
from nejm_b2txt_utils.lm_params import LMParams
from nejm_b2txt_utils.redis_protocol import format_scoring

log = logging.getLogger(__name__)


def nbest_decoding(decoder: CtcWfstDecoder) -> list[Hypothesis]:
    """Finish the utterance: lattice pass and word n-best.

    Args:
        decoder: the utterance's decoder (after its logits).

    Returns:
        At most ``nbest`` hypotheses, ``total = acoustic_scale*ac + lm``, best first; ``[]`` without output.
    """
    return decoder.finalize()


def exact_ngram_scores(grammar: GrammarFst, nbest: list[Hypothesis], params: LMParams,
                       target: StoreTarget | None = None) -> list[Hypothesis]:
    """``exact_ngram=1`` without ``rescore``: each sentence's n-gram score becomes the ARPA's own
    (:func:`~language_model.decoding.ngram_rescore.exact_rescore`; the search's backoff epsilons can score a
    sentence better than its ARPA probability).

    Args:
        grammar: the LM folder's ``G.fst``.
        nbest: hypotheses with word ids.
        params: reads ``acoustic_scale``.
        target: the LM folder's n-gram store (the full LM's exact scores, the two-pass design); default ``G.fst``.

    Returns:
        Rescored hypotheses, best first.
    """
    return exact_rescore(grammar, nbest, params.acoustic_scale, target)


def rescore_with_ngram(rescorer: NgramRescorer, nbest: list[Hypothesis], params: LMParams) -> list[Hypothesis]:
    """``rescore=1``: the unpruned grammar's n-gram scores (:class:`NgramRescorer`), exact with ``exact_ngram``.

    Args:
        rescorer: ``G.fst`` and ``G_no_prune.fst`` of the LM folder.
        nbest: hypotheses with word ids.
        params: reads ``acoustic_scale``, ``exact_ngram``.

    Returns:
        Rescored hypotheses, best first.
    """
    return rescorer.rescore(nbest, params.acoustic_scale, exact=bool(params.exact_ngram))


def augment(nbest: list[Hypothesis], params: LMParams) -> list[Hypothesis]:
    """The original's augmentation (``top_candidates_to_augment``, ``score_penalty_percent``).

    Args:
        nbest: hypotheses.
        params: reads ``top_candidates_to_augment``, ``acoustic_scale``, ``score_penalty_percent``.

    Returns:
        The hypotheses plus the swapped sentences, best first.
    """
    return augment_nbest(nbest, params.top_candidates_to_augment, params.acoustic_scale,
                         params.score_penalty_percent)


def rescore_with_causal_lm(scorer: CausalLMScorer, nbest: list[Hypothesis], params: LMParams,
                           context: str = "") -> tuple[str, list[Hypothesis]]:
    """``do_opt=1``: causal-LM scores and the original's weighted total.

    Args:
        scorer: the loaded causal LM.
        nbest: hypotheses.
        params: reads ``acoustic_scale``, ``alpha``, ``length_penalty``, ``llm_prune``, ``llm_top_k``.
        context: text the causal LM sees before each sentence.

    Returns:
        ``(best sentence, hypotheses with llm and total set)`` (see :func:`rescore_nbest`).
    """
    return rescore_nbest(scorer, nbest, params.acoustic_scale, params.alpha, params.length_penalty, context,
                         prune=bool(params.llm_prune), top_k=params.llm_top_k)


@dataclass
class FinalResult:
    """The outcome of one utterance: best sentence, scored candidates, the context used."""

    sentence: str
    candidates: list[Hypothesis] = field(default_factory=list)
    context: str = ""
    n_decoded: int = 0  # distinct decoder hypotheses before augmentation

    def fields(self) -> dict[str, str]:
        """The ``remote_lm_output_final`` entry (always all three fields).

        Returns:
            ``{"lm_response_final", "scoring", "context_str"}``.
        """
        return {
            "lm_response_final": self.sentence,
            "scoring": format_scoring(self.candidates),
            "context_str": self.context,
        }


def finalize_utterance(decoder: CtcWfstDecoder, params: LMParams, rescorer: NgramRescorer | None = None,
                       scorer: CausalLMScorer | None = None, context: str = "",
                       grammar: GrammarFst | None = None, store: StoreTarget | None = None) -> FinalResult:
    """Run the stages as the original server's finalize.

    Args:
        decoder: the utterance's decoder.
        params: the utterance's parameters (``rescore``, ``nbest``, ``do_opt`` pick the stages).
        rescorer: needed when ``params.rescore``.
        scorer: needed when ``params.do_opt``.
        context: the context string for the causal LM (echoed in ``context_str``).
        grammar: ``G.fst`` for ``exact_ngram`` (without it, or with ``rescore``, that stage is skipped).
        store: the LM folder's n-gram store: ``exact_ngram`` then scores with the full LM it holds.

    Returns:
        The :class:`FinalResult`; candidates whose sentence contains ``;`` are left out (the framing cannot
        carry it; spec §2.6).

    Raises:
        RuntimeError: a stage is switched on but its component is not loaded.
    """
    t0 = time.perf_counter()
    nbest = nbest_decoding(decoder)
    t_dec = time.perf_counter()
    if not nbest:
        log.info("final: no decoder output (%d frames)", decoder.num_frames)
        return FinalResult("", [], context)
    if params.rescore:
        if rescorer is None:
            raise RuntimeError("rescore is on but G_no_prune.fst was not loaded")
        nbest = rescore_with_ngram(rescorer, nbest, params)
    elif params.exact_ngram and grammar is not None:
        nbest = exact_ngram_scores(grammar, nbest, params, store)
    best, n_decoded = nbest[0].sentence, len(nbest)
    if params.nbest > 1:
        nbest = augment(nbest, params)
        log.debug("augmented n-best from %d to %d candidates", n_decoded, len(nbest))
    if params.do_opt:
        if scorer is None:
            raise RuntimeError("do_opt is on but no causal LM is loaded")
        best, nbest = rescore_with_causal_lm(scorer, nbest, params, context)
    candidates = [h for h in nbest if ";" not in h.sentence]
    log.info("final: %r (%d candidates; decode %.0f ms, scoring %.0f ms)", best, len(candidates),
             1000 * (t_dec - t0), 1000 * (time.perf_counter() - t_dec))
    return FinalResult(best, candidates, context, n_decoded)
