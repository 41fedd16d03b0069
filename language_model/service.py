"""What the server does per utterance, independent of Redis: decode, finalize, score (spec §2.4 step 5).

``LMService`` owns the loaded LM folder, the optional unpruned-G rescorer and the optional causal
LM, and turns a finalized decoder into a :class:`FinalResult` (``lm_response_final``, the
``scoring`` rows and ``context_str``), the three fields of ``remote_lm_output_final``.

Fixed versus the original (spec §2.8):
  * ``--nbest 1`` crashed at finalize (``nbest_out`` undefined); here the 1-best is scored like any
    n-best (no augmentation, as the original only augments when ``nbest > 1``), and ``scoring`` is
    always sent, so a client always gets a prediction;
  * turning ``do_opt`` (or ``rescore``) on by an update when the model (or ``G_no_prune.fst``) was
    not loaded crashed at finalize; here the update loads it, or is rejected with an error reply;
  * sentences are sent without the leading space the C++ ``ProcessBlank`` left on partial and
    non-LLM final strings (``scoring`` sentences were already stripped).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from language_model.decoder import CtcWfstDecoder, DecoderOptions, LMResources
from language_model.llm_rescore import CausalLMScorer, rescore_nbest, resolve_device
from language_model.lm_args import ServiceParams
from language_model.nbest import augment_nbest
from language_model.ngram_rescore import NgramRescorer
from nejm_b2txt_utils.redis_protocol import Candidate, format_scoring

log = logging.getLogger(__name__)


@dataclass
class FinalResult:
    sentence: str
    candidates: list[Candidate] = field(default_factory=list)
    context: str = ""
    n_decoded: int = 0  # distinct decoder hypotheses before augmentation

    def fields(self) -> dict[str, str]:
        """The ``remote_lm_output_final`` entry (always all three fields; see module docstring)."""
        return {
            "lm_response_final": self.sentence,
            "scoring": format_scoring(self.candidates),
            "context_str": self.context,
        }


class LMService:
    """Loaded resources plus the finalize pipeline; one per process, shared by its sessions."""

    def __init__(
        self,
        lm_path: str,
        opt_model: str = "facebook/opt-6.7b",
        opt_cache_dir: str | None = None,
        gpu_number: int = 0,
        llm_batch_size: int = 0,
        lattice_pass_margin: float = 5.0,
    ):
        t0 = time.perf_counter()
        self.lm_path = str(lm_path)
        self.resources = LMResources(lm_path)
        log.info(
            "loaded %s (TLG %d states, %d words) in %.2f s",
            lm_path,
            self.resources.tlg.num_states,
            len(self.resources.words),
            time.perf_counter() - t0,
        )
        self.opt_model, self.opt_cache_dir = opt_model, opt_cache_dir
        self.gpu_number, self.llm_batch_size = gpu_number, llm_batch_size
        self.lattice_pass_margin = lattice_pass_margin
        self.scorer: CausalLMScorer | None = None
        self.rescorer: NgramRescorer | None = None

    # ------------------------------------------------------------------ optional components
    def ensure_components(self, params: ServiceParams) -> None:
        """Load what ``params`` needs (causal LM for do_opt, grammars for rescore); raises if impossible."""
        if params.rescore and self.rescorer is None:
            self.rescorer = NgramRescorer(self.lm_path, self.resources.words)
        if params.do_opt and self.scorer is None:
            t0 = time.perf_counter()
            device = resolve_device(self.gpu_number)
            self.scorer = CausalLMScorer.load(self.opt_model, device, self.opt_cache_dir, self.llm_batch_size)
            log.info("causal LM %s loaded on %s in %.1f s", self.opt_model, device, time.perf_counter() - t0)

    def decoder_options(self, params: ServiceParams) -> DecoderOptions:
        return replace(params.decoder_options(), lattice_pass_margin=self.lattice_pass_margin)

    def new_decoder(self, params: ServiceParams) -> CtcWfstDecoder:
        return CtcWfstDecoder(self.resources, self.decoder_options(params))

    # ------------------------------------------------------------------ finalize (spec §2.4 step 5)
    def finalize(self, decoder: CtcWfstDecoder, params: ServiceParams, context: str = "") -> FinalResult:
        t0 = time.perf_counter()
        nbest = decoder.finalize()
        t_dec = time.perf_counter()
        if not nbest:
            log.info("final: no decoder output (%d frames)", decoder.num_frames)
            return FinalResult("", [], context)
        scale = params.acoustic_scale
        if params.rescore:
            if self.rescorer is None:
                raise RuntimeError("rescore is on but G_no_prune.fst was not loaded")
            nbest = self.rescorer.rescore(nbest, scale)
        decoder_best, n_decoded = nbest[0].sentence, len(nbest)
        if params.nbest > 1:
            n_before = len(nbest)
            nbest = augment_nbest(
                nbest, params.top_candidates_to_augment, scale, params.score_penalty_percent
            )
            log.debug("augmented n-best from %d to %d candidates", n_before, len(nbest))
        if params.do_opt:
            if self.scorer is None:
                raise RuntimeError("do_opt is on but no causal LM is loaded")
            best, rows = rescore_nbest(
                self.scorer, nbest, scale, params.alpha, params.length_penalty, context
            )
            candidates = [Candidate(r.sentence, r.ac, r.ngram, r.llm, r.total) for r in rows]
        else:
            best = decoder_best
            candidates = [Candidate(h.sentence, h.ac, h.lm, 0.0, h.total(scale)) for h in nbest]
        candidates = [
            c for c in candidates if ";" not in c.sentence
        ]  # the framing cannot carry ';' (spec §2.6)
        log.info(
            "final: %r (%d candidates; decode %.0f ms, scoring %.0f ms)",
            best,
            len(candidates),
            1000 * (t_dec - t0),
            1000 * (time.perf_counter() - t_dec),
        )
        return FinalResult(best, candidates, context, n_decoded)
