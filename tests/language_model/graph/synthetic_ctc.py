"""Test helpers for the LM-building tests: synthetic CTC posteriors of a phone string, and a 1-best
decode through an LM folder's ``TLG.fst`` with ``kaldi_decoder.FasterDecoder`` (as the server does)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from language_model.graph.tlg import N_TOKENS
from nejm_b2txt_utils.phonemes import PHONEME_TO_LM_ID
from nejm_b2txt_utils.symbol_table import read_symbols


def synthetic_lm_logp(phones: list[str], seed: int = 0, peak: float = 12.0) -> np.ndarray:
    """Log-softmax'ed LM-order logits: two frames per phone then a blank, over N(0,1) noise."""
    rng = np.random.default_rng(seed)
    classes = [c for p in phones for c in (PHONEME_TO_LM_ID[p],) * 2 + (0,)]
    logits = rng.normal(size=(len(classes), N_TOKENS)).astype(np.float64)
    logits[np.arange(len(classes)), classes] += peak
    logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return logits


def decode_words(lm_dir: Path, logp: np.ndarray, acoustic_scale: float = 0.325, blank_penalty: float = 90.0):
    """(1-best words, graph cost) of ``logp`` through ``lm_dir/TLG.fst``."""
    import kaldi_decoder
    import kaldifst

    scores = logp.copy()
    scores[:, 0] -= math.log(blank_penalty)
    tlg = kaldifst.StdVectorFst.read(str(lm_dir / "TLG.fst"))
    decoder = kaldi_decoder.FasterDecoder(tlg, kaldi_decoder.FasterDecoderOptions(beam=17, max_active=7000))
    decoder.decode(kaldi_decoder.DecodableCtc((scores * acoustic_scale).astype(np.float32)))
    ok, best = decoder.get_best_path()
    assert ok, "no path survived the beam"
    ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(best)
    words = read_symbols(lm_dir / "words.txt")
    return [words[o] for o in olabels if o], weight.value1
