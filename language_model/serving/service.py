"""What the server holds per process, independent of Redis: the loaded LM folder and optional components.

``LMService`` owns the decoding graph (:class:`LMResources`), the optional unpruned-G rescorer and the
optional causal LM, makes decoders and runs :func:`language_model.decoding.decode.finalize_utterance`.

An LM folder with an n-gram store (``ngram_store/``) opens it at start-up (a damaged store stops the server
with one line) and scores the n-best of ``exact_ngram``/``rescore`` with it: the full LM, memory-mapped.

Fixed versus the original (spec §2.8): turning ``do_opt`` (or ``rescore``) on by an update when the model
(or ``G_no_prune.fst``) was not loaded crashed at finalize; here the update loads it, or is rejected with an
error reply.
"""

from __future__ import annotations

import logging
import time

from language_model.decoding.decode import FinalResult, finalize_utterance
from language_model.decoding.llm_rescore import DEFAULT_OPT_MODEL, CausalLMScorer
from language_model.decoding.ngram_rescore import STORE_DIR, GrammarFst, NgramRescorer, StoreTarget
from language_model.decoding.wfst import CtcWfstDecoder, LMResources
from language_model.ngram.store import StoreError
from nejm_b2txt_utils.devices import select_device
from nejm_b2txt_utils.lm_params import LMParams

log = logging.getLogger(__name__)


class LMService:
    """Loaded resources plus the finalize pipeline; one per process, shared by its sessions."""

    def __init__(self, lm_path: str, opt_model: str = DEFAULT_OPT_MODEL, opt_cache_dir: str | None = None,
                 params: LMParams | None = None):
        """Load ``TLG.fst`` and ``words.txt`` (the optional components load in :meth:`ensure_components`).

        Args:
            lm_path: the LM folder.
            opt_model: ``--opt_model`` (loaded only when ``do_opt`` is first on).
            opt_cache_dir: the Hugging Face cache.
            params: start-up parameters (reads ``gpu_number`` and ``llm_batch_size``); default: the table's.

        Raises:
            FileNotFoundError, ValueError: as :class:`LMResources`.
            StoreError: the folder's ``ngram_store/`` is incomplete, truncated or foreign.
        """
        t0 = time.perf_counter()
        self.lm_path = str(lm_path)
        self.resources = LMResources(lm_path)
        log.info("loaded %s (TLG %d states, %d words) in %.2f s", lm_path, self.resources.tlg.num_states,
                 len(self.resources.words), time.perf_counter() - t0)
        self.store: StoreTarget | None = None
        store_path = self.resources.lm_path / STORE_DIR
        if store_path.exists() and not store_path.is_dir():  # was ignored silently
            raise StoreError(f"{store_path}: not a folder; expected an n-gram store (language_model/convert_lm.py) "
                             "or nothing")
        if store_path.is_dir():
            t0 = time.perf_counter()
            self.store = StoreTarget(store_path, self.resources.words)
            log.info("n-gram store %s: order %d, n-grams %s, opened in %.2f s", store_path, self.store.store.order,
                     self.store.store.counts, time.perf_counter() - t0)
        self.opt_model, self.opt_cache_dir = opt_model, opt_cache_dir
        self.startup = params or LMParams()
        self.scorer: CausalLMScorer | None = None
        self.rescorer: NgramRescorer | None = None
        self.grammar: GrammarFst | None = None

    def ensure_components(self, params: LMParams) -> None:
        """Load what ``params`` needs (causal LM for ``do_opt``, grammars for ``rescore``).

        Args:
            params: the parameters about to be used.

        Raises:
            FileNotFoundError: ``rescore`` without ``G.fst``/``G_no_prune.fst`` (or the n-gram store).
            LLMUnavailableError: ``do_opt`` with a model that is not available offline.
        """
        if params.rescore and self.rescorer is None:
            self.rescorer = NgramRescorer(self.lm_path, self.resources.words, self.store)
        g_path = self.resources.lm_path / "G.fst"
        if params.exact_ngram and self.grammar is None and g_path.is_file():  # without G.fst: search scores
            words = self.resources.words
            self.grammar = GrammarFst(g_path, words.index("#0") if "#0" in words else None)
        if params.do_opt and self.scorer is None:
            t0 = time.perf_counter()
            device = str(select_device(self.startup.gpu_number))
            if self.startup.llm_threads > 0:
                import torch

                torch.set_num_threads(self.startup.llm_threads)
            self.scorer = CausalLMScorer.load(self.opt_model, device, self.opt_cache_dir, self.startup.llm_batch_size,
                                              self.startup.llm_scoring, self.startup.llm_dtype)
            log.info("causal LM %s loaded on %s in %.1f s", self.opt_model, device, time.perf_counter() - t0)
            if self.startup.llm_prune and self.startup.llm_scoring != "tree":
                log.warning("--llm_prune 1 applies to --llm_scoring tree only; with %s every candidate is scored",
                            self.startup.llm_scoring)

    def new_decoder(self, params: LMParams) -> CtcWfstDecoder:
        """A decoder over the shared graph with ``params``' search settings.

        Args:
            params: the utterance's parameters.

        Returns:
            A fresh :class:`CtcWfstDecoder`.
        """
        return CtcWfstDecoder(self.resources, params)

    def finalize(self, decoder: CtcWfstDecoder, params: LMParams, context: str = "") -> FinalResult:
        """Finish ``decoder``'s utterance with the stages ``params`` switches on.

        Args:
            decoder: the utterance's decoder.
            params: the utterance's parameters.
            context: text the causal LM sees first (echoed in ``context_str``).

        Returns:
            The :class:`FinalResult`.

        Raises:
            RuntimeError: a stage is on but its component is not loaded.
        """
        return finalize_utterance(decoder, params, self.rescorer, self.scorer, context, self.grammar, self.store)
