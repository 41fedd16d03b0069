"""CTC WFST decoding of phoneme logits over a ``TLG.fst`` (the original's ``BrainSpeechDecoder``).

Per chunk of ``[T, 41]`` LM-order logits (spec §4.2):
  1. ``logp = log_softmax(logits)``; ``logp[:, 0] -= ln(blank_penalty)`` (not renormalised);
  2. optional blank skipping: a frame whose (penalised) blank probability exceeds
     ``ctc_blank_skip_threshold`` is skipped; if the next kept frame repeats the previous kept
     frame's non-blank argmax, the remembered blank frame is fed first so the repeat stays separable
     (1.0 = never skip, the service default);
  3. the decodable returns ``acoustic_scale * logp[t, label - 1]`` (``kaldi_decoder.DecodableCtc``).

Streaming partials come from ``kaldi_decoder.FasterDecoder`` advanced chunk by chunk (beam,
max_active, min_active). At finalize the kept frames are decoded again with
``LatticeSimpleDecoder`` (beam, lattice_beam) and the raw lattice is turned into a word-level n-best
by :mod:`language_model.decoding.lattice`. Scores follow spec §4.4: ``lm = -graph_cost`` (n-gram + lexicon
silence terms, nats) and ``ac = -acoustic_cost / acoustic_scale`` (unscaled penalised log-likelihood).

Fixed versus the original (spec §2.8): the beam flags (beam, max_active, min_active, lattice_beam)
really apply, at start-up and after an update (the original always used 17/7000/200/8); logits sent
after a finalize start a new utterance instead of aborting the Kaldi decoder. Differences that come
from the replacement stack (spec §9.5): the lattice pass has no max_active cap (kaldi-decoder does not
expose LatticeFasterDecoder). Kaldi's cap narrowed the effective beam wherever more than 7000
tokens were within it; without it a beam-17 lattice pass over a 126k-word graph takes seconds to
tens of seconds on ambiguous input. So the lattice pass searches with ``min(beam, lattice_beam +
lattice_pass_margin)`` (13 by default; ``--lattice_pass_margin``): on our 126k-word 1-gram test
utterances its 100-best (sentences and scores) equalled the beam-17 one at 4-10x less time, and the
n-best only keeps paths within ``lattice_beam`` of the best anyway. The streaming pass keeps the full
beam with max_active/min_active.

The cap on the lattice pass (``--lattice_pass_max_beam``, 17 cost units = the original's fixed beam): whatever
``beam``, ``lattice_pass_margin``, ``acoustic_scale`` and ``beam_acoustic_scale`` say, the lattice pass's beam
is at most this many cost units (before it, ``beam_acoustic_scale=0.3`` at ``acoustic_scale=3`` made it 130,
and ``beam 1000`` with ``lattice_pass_margin 1000`` made it 1000: a search over most of the graph). What it
bounds: the costs a token may lie behind the frame's best, so with ``max_frames_per_utterance`` the pass's
work is bounded by the graph (tokens within 17 of the best, times frames). What it does not bound: the
tokens per frame themselves; on uninformative logits (a flat or pure-noise model output) the demo's 3-gram
graph keeps 10^4-10^5 tokens per frame within 13-17 cost units (measured on 40 flat frames: 0.4 s per frame
at 13, 1.2-4 s at 17, on one shared core), where Kaldi's max_active would have narrowed the beam. Only the
streaming pass has that cap (``max_active``). The default (13) is below the ceiling: unchanged.

Bounded finalize (added; ``--lattice_max_arcs``, 3000): the lattice pass first runs at ``lattice_beam`` (8; cheap:
0.4 s on 52 near-uniform frames of the wordfreq 1-gram, where beam 13 took 30 s and 9 took 3 s). When that
lattice has more than ``lattice_max_arcs`` arcs the logits are ambiguous (an early checkpoint's, near-uniform;
confident ones give ~15 arcs per frame) and that lattice is used, cut to its best ``lattice_max_arcs`` arcs
(:func:`~language_model.decoding.lattice.cap_lattice`) before the n-best extraction; otherwise the pass is redone at
:attr:`CtcWfstDecoder.lattice_pass_beam` as before (same n-best). Before, 52 such frames took 251 s to finalize
(``benchmarks/lm_finalize_bound.py`` measures it).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from language_model.decoding.lattice import best_path_hypothesis, lattice_word_nbest, read_lattice
from language_model.decoding.native_calls import native_call
from language_model.graph.fst_io import read_fst
from nejm_b2txt_utils.hypothesis import Hypothesis
from nejm_b2txt_utils.lm_params import LMParams
from nejm_b2txt_utils.phonemes import N_CLASSES
from nejm_b2txt_utils.symbol_table import symbols_by_id

log = logging.getLogger(__name__)


#: The parameters the search reads; a change of any of them needs a new search (:meth:`CtcWfstDecoder.set_options`).
SEARCH_FIELDS = ("beam", "max_active", "min_active", "lattice_beam", "acoustic_scale", "ctc_blank_skip_threshold",
                 "blank_penalty", "nbest", "lattice_pass_margin", "beam_acoustic_scale", "lattice_pass_max_beam",
                 "lattice_max_arcs")


#: Confident logits give ~15 lattice arcs per frame at lattice_beam 8: a long confident utterance (thousands of
#: frames) is not ambiguous for having more than lattice_max_arcs arcs (it was capped to an empty n-best).
ARCS_PER_FRAME_BUDGET = 60


def lattice_arc_budget(lattice_max_arcs: int, n_frames: int) -> int:
    """The arc budget of one utterance's lattice: ``lattice_max_arcs``, or ``ARCS_PER_FRAME_BUDGET`` per frame if more.

    Args:
        lattice_max_arcs: the parameter (3000 by default).
        n_frames: frames of the utterance (after blank skipping).

    Returns:
        The budget (arcs).
    """
    return max(int(lattice_max_arcs), ARCS_PER_FRAME_BUDGET * int(n_frames))


class UtteranceTooLongError(ValueError):
    """A chunk would make the utterance longer than ``max_frames_per_utterance`` (answered as an error)."""


def search_settings(params: LMParams) -> tuple:
    """The values of :data:`SEARCH_FIELDS` in ``params`` (equal tuples: the same search).

    Args:
        params: the parameters.

    Returns:
        The search-relevant values, in :data:`SEARCH_FIELDS` order.
    """
    return tuple(getattr(params, k) for k in SEARCH_FIELDS)


class LMResources:
    """What a decoder needs from an LM folder: ``TLG.fst`` and ``words.txt`` (loaded once, shared)."""

    def __init__(self, lm_path: str | os.PathLike):
        """Load the folder.

        Args:
            lm_path: the LM folder (``~`` expanded).

        Raises:
            FileNotFoundError: the folder, ``TLG.fst`` or ``words.txt`` is missing.
            ValueError: ``TLG.fst`` is truncated, corrupt or empty (:class:`FstReadError`), or ``words.txt``
                malformed (file and line named).
        """
        self.lm_path = Path(os.path.expanduser(str(lm_path)))
        if not self.lm_path.is_dir():
            raise FileNotFoundError(f"language model folder not found: {self.lm_path}")
        tlg_path, words_path = self.lm_path / "TLG.fst", self.lm_path / "words.txt"
        for p in (tlg_path, words_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p.name} not found in the language model folder {self.lm_path}")
        self.tlg = read_fst(tlg_path)
        self.words = symbols_by_id(words_path)

    def words_to_text(self, word_ids) -> str:
        """Word ids -> lower-case sentence (the original's ``ProcessBlank``; spec §4.5), no leading space.

        Args:
            word_ids: ids into ``words.txt``; unknown ids, ``#k``, ``<s>``, ``</s>`` and ``<eps>`` are dropped.

        Returns:
            The words joined by single spaces.
        """
        out = []
        for i in word_ids:
            w = self.words[i] if 0 <= i < len(self.words) else ""
            if w and not w.startswith("#") and w not in ("<s>", "</s>", "<eps>"):
                out.append(w.replace("\u2581", " ").strip().lower())
        return " ".join(w for w in out if w)


def frame_log_probs(logits: np.ndarray, blank_penalty: float) -> np.ndarray:
    """log_softmax over the 41 classes, then ``ln(blank_penalty)`` off the blank column.

    Args:
        logits: ``[T, 41]`` raw LM-order logits (one row per 80 ms frame).
        blank_penalty: the divisor of the blank probability (> 0).

    Returns:
        ``[T, 41]`` float64 log-probabilities (nats), blank column penalised, not renormalised.

    Raises:
        ValueError: ``logits`` is not ``[T, 41]``.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != N_CLASSES:
        raise ValueError(f"logits: expected shape [T, {N_CLASSES}], got {list(x.shape)}")
    m = x.max(axis=1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    logp[:, 0] -= math.log(blank_penalty)
    return logp


class CtcWfstDecoder:
    """One utterance at a time: ``reset()``, ``accept_logits(chunk) -> partial``, ``finalize() -> n-best``.

    Not thread-safe; one instance per concurrent utterance (they can share one :class:`LMResources`).
    """

    def __init__(self, resources: LMResources, options: LMParams | None = None):
        """Args:
            resources: the loaded LM folder (shared between decoders).
            options: the parameters (the search reads :data:`SEARCH_FIELDS`); default: the table's defaults.
        """
        self.res = resources
        self.opts = options or LMParams()
        self._faster = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start a new utterance: a fresh streaming search, no frames kept."""
        import kaldi_decoder

        o = self.opts
        fopts = kaldi_decoder.FasterDecoderOptions(
            beam=o.beam * self.beam_factor, max_active=o.max_active, min_active=o.min_active
        )
        self._faster = kaldi_decoder.FasterDecoder(self.res.tlg, fopts)
        self._faster.init_decoding()
        self._frames: list[np.ndarray] = []  # kept (scaled) frames, for the lattice pass at finalize
        self._n_fed = 0
        self._n_received = 0
        self._last_best = -1
        self._last_skipped: np.ndarray | None = None
        self.finalized = False

    def set_options(self, options: LMParams) -> None:
        """New settings; takes effect from the next utterance (the current one is reset).

        Args:
            options: the new parameters.
        """
        self.opts = options
        self.reset()

    @property
    def lattice_pass_beam(self) -> float:
        """The beam of the finalize lattice pass.

        Returns:
            ``min(beam, lattice_beam + lattice_pass_margin) * beam_factor``, at most ``lattice_pass_max_beam``
            (cost units).
        """
        o = self.opts
        return min(min(o.beam, o.lattice_beam + o.lattice_pass_margin) * self.beam_factor, o.lattice_pass_max_beam)

    @property
    def beam_factor(self) -> float:
        """Multiplier of the beams: ``acoustic_scale / beam_acoustic_scale`` (1 when that is 0, the original).

        The search's costs are ``acoustic_scale * acoustic + lm``, so a fixed beam covers fewer acoustic
        alternatives the larger the scale (beam 17 at scale 3 is 5.7 acoustic nats, at 0.325 it is 52). With
        ``beam_acoustic_scale`` set, the beams are read as given at that scale and keep their acoustic width at
        any ``acoustic_scale``. ``lattice_beam`` (the n-best's window over total scores) is not scaled: a
        10x wider lattice window makes lattice determinization explode.
        """
        o = self.opts
        return o.acoustic_scale / o.beam_acoustic_scale if o.beam_acoustic_scale > 0 else 1.0

    @property
    def num_frames(self) -> int:
        """Frames received in this utterance (before blank skipping).

        Returns:
            The count of 80 ms frames.
        """
        return self._n_received

    # ------------------------------------------------------------------ decoding
    def _select_frames(self, logp: np.ndarray) -> np.ndarray:
        """Blank skipping (spec §4.2 step 4); returns the frames to feed, in order."""
        thresh = self.opts.ctc_blank_skip_threshold
        if thresh >= 1.0:
            return logp
        keep: list[np.ndarray] = []
        blank_prob = np.exp(logp[:, 0])
        best = logp.argmax(axis=1)
        for t in range(logp.shape[0]):
            if blank_prob[t] > thresh:
                self._last_skipped = logp[t]
                continue
            if best[t] != 0 and self._last_skipped is not None and best[t] == self._last_best:
                keep.append(self._last_skipped)
            self._last_best = int(best[t])
            self._last_skipped = None
            keep.append(logp[t])
        return np.stack(keep) if keep else logp[:0]

    def accept_logits(self, logits: np.ndarray) -> str:
        """Decode one chunk of raw LM-order logits.

        Args:
            logits: ``[T, 41]`` LM-order logits of the next ``T`` frames (80 ms each); ``T`` may be 0.

        Returns:
            The best partial sentence over all frames of the utterance so far.

        Raises:
            ValueError: ``logits`` is not ``[T, 41]``.
            UtteranceTooLongError: the utterance would exceed ``max_frames_per_utterance`` frames (the chunk
                is not decoded).
        """
        import kaldi_decoder

        if self.finalized:  # the original aborted here (Kaldi assertion); start a new utterance instead
            log.warning("logits after finalize without a reset: starting a new utterance")
            self.reset()
        cap = self.opts.max_frames_per_utterance
        if self._n_received + len(logits) > cap:  # added: one huge utterance took the original down
            raise UtteranceTooLongError(
                f"utterance too long: {self._n_received} + {len(logits)} frames > max_frames_per_utterance={cap} "
                f"({cap * 0.08 / 60:.1f} min at 80 ms per frame); this chunk is rejected (the utterance keeps its "
                "earlier frames): split the trial, or start the server with a larger --max_frames_per_utterance")
        logp = frame_log_probs(logits, self.opts.blank_penalty)
        self._n_received += logp.shape[0]
        feed = (self._select_frames(logp) * self.opts.acoustic_scale).astype(np.float32)
        if feed.shape[0]:
            with native_call():
                self._faster.advance_decoding(kaldi_decoder.DecodableCtc(feed, offset=self._n_fed))
            self._frames.append(feed)
            self._n_fed += feed.shape[0]
        return self.partial()

    def partial(self) -> str:
        """Best path over the frames so far, without final probabilities (spec §4.4).

        Returns:
            The partial sentence (``""`` before any frame).
        """
        import kaldifst

        if self._n_fed == 0:
            return ""
        ok, lat = self._faster.get_best_path(use_final_probs=False)
        if not ok:
            return ""
        ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(lat)
        return self.res.words_to_text(olabels) if ok else ""

    def finalize(self) -> list[Hypothesis]:
        """Lattice pass over the whole utterance, then the word-level n-best (best first).

        Returns:
            Hypotheses with ``total = acoustic_scale*ac + lm``, best first (at most ``nbest``); ``[]`` when no
            frame was received or no path survived. The decoder stays finalized until :meth:`reset` (or new
            logits, which start a new utterance).
        """
        self.finalized = True
        if self._n_fed == 0:
            return []
        frames = np.concatenate(self._frames) if len(self._frames) > 1 else self._frames[0]
        o = self.opts
        wide = self.lattice_pass_beam
        dec = self._lattice_pass(frames, min(wide, o.lattice_beam))
        lat = None
        if wide > o.lattice_beam:  # the narrow pass measures how ambiguous the logits are
            with native_call():
                ok, lattice = dec.get_raw_lattice(True)
            lat = read_lattice(lattice) if ok and lattice.num_states else None
            n_arcs = 0 if lat is None else len(lat.flat)
            if n_arcs <= lattice_arc_budget(o.lattice_max_arcs, frames.shape[0]):
                dec, lat = self._lattice_pass(frames, wide), None
            else:
                log.warning("ambiguous logits: the lattice at beam %.1f has %d arcs (%d frames) > the budget %d "
                            "(lattice_max_arcs=%d, at least %d per frame); the n-best comes from its best arcs, no "
                            "wider pass", o.lattice_beam, n_arcs, frames.shape[0],
                            lattice_arc_budget(o.lattice_max_arcs, frames.shape[0]), o.lattice_max_arcs,
                            ARCS_PER_FRAME_BUDGET)
        if o.nbest == 1:  # the best path is the 1-best and its own split: no lattice, no determinization
            ok, path = dec.get_best_path(True)
            return best_path_hypothesis(path, o.acoustic_scale, self.res.words_to_text) if ok else []
        if lat is None:
            with native_call():
                ok, lattice = dec.get_raw_lattice(True)
            if not ok or lattice.num_states == 0:
                return []
            lat = read_lattice(lattice)
        return lattice_word_nbest(lat, o.nbest, o.lattice_beam, o.acoustic_scale, self.res.words_to_text,
                                  max_arcs=lattice_arc_budget(o.lattice_max_arcs, frames.shape[0]))

    def _lattice_pass(self, frames: np.ndarray, beam: float):
        """``LatticeSimpleDecoder`` over ``frames`` ``[T', 41]`` (scaled, kept frames) at ``beam`` (cost units)."""
        import kaldi_decoder

        cfg = kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam, lattice_beam=self.opts.lattice_beam)
        dec = kaldi_decoder.LatticeSimpleDecoder(self.res.tlg, cfg)
        with native_call():
            reached = dec.decode(kaldi_decoder.DecodableCtc(frames))
        if not reached:
            log.warning("lattice decoder reached no state at the end of %d frames", frames.shape[0])
        return dec
