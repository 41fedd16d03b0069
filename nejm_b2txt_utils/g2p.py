"""Offline grapheme-to-phoneme conversion for words outside the CMU dictionary.

The original runs ``g2p_en.G2p``, whose out-of-vocabulary path is a small GRU encoder-decoder.
``import g2p_en`` tries to download NLTK data, which fails offline, so we never import it: we read
the network weights that its wheel ships (``g2p_en/checkpoint20.npz``) and run the same greedy
encoder-decoder here in numpy. Homograph disambiguation (which needs an NLTK POS tagger) is not
available offline; the lexicon uses the CMU first pronunciation instead.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np

_GRAPHEMES = ["<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz"]
_VOWELS = ["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"]
_CONSONANTS = ["B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S",
               "SH", "T", "TH", "V", "W", "Y", "Z", "ZH"]  # fmt: skip
# The decoder's output vocabulary: 4 specials, then every stressed vowel, the consonants and a
# stress-less "UW" (present in the training lexicon), in plain lexicographic order.
_PHONES = ["<pad>", "<unk>", "<s>", "</s>"] + sorted(
    {v + s for v in _VOWELS for s in "012"} | set(_CONSONANTS) | {"UW"}
)
_START, _END = 2, 3
_MAX_PHONES = 20


def _weights_path() -> str:
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or spec.origin is None:
        raise ImportError("g2p_en is not installed: pip install g2p_en==2.1.0 (its weights are used offline)")
    return os.path.join(os.path.dirname(spec.origin), "checkpoint20.npz")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    """One GRU step with PyTorch's gate layout (r, z, n stacked along the first weight axis)."""
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    n_h = h.shape[-1]
    r = _sigmoid(gi[..., :n_h] + gh[..., :n_h])
    z = _sigmoid(gi[..., n_h : 2 * n_h] + gh[..., n_h : 2 * n_h])
    n = np.tanh(gi[..., 2 * n_h :] + r * gh[..., 2 * n_h :])
    return (1.0 - z) * n + z * h


class NeuralG2P:
    """Greedy seq2seq G2P over lower-case letters; returns stressed ARPAbet symbols."""

    def __init__(self, weights_path: str | None = None):
        """Load the weights.

        Args:
            weights_path: an ``.npz`` of the G2P GRU (default: ``g2p_en``'s checkpoint).

        Raises:
            ImportError: ``g2p_en`` (whose weights are used) is not installed.
            ValueError: the weights do not have the expected shapes.
        """
        w = np.load(weights_path or _weights_path())
        self._w = {k: w[k].astype(np.float32) for k in w.files}
        if self._w["fc_w"].shape[0] != len(_PHONES):
            raise ValueError(f"G2P weights: expected {len(_PHONES)} output phones, got {self._w['fc_w'].shape[0]}")
        self._g2i = {g: i for i, g in enumerate(_GRAPHEMES)}

    def predict(self, word: str) -> list[str]:
        """Pronounce one word (greedy decoding of the seq2seq GRU).

        Args:
            word: letters (case-insensitive; unknown characters map to ``<unk>``).

        Returns:
            ARPAbet phones with stress digits (at most 20).
        """
        w = self._w
        ids = [self._g2i.get(c, 1) for c in word.lower()] + [self._g2i["</s>"]]
        h = np.zeros(w["enc_w_hh"].shape[1], dtype=np.float32)
        for i in ids:
            h = _gru_step(w["enc_emb"][i], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        out: list[str] = []
        prev = _START
        for _ in range(_MAX_PHONES):
            h = _gru_step(w["dec_emb"][prev], h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            prev = int(np.argmax(h @ w["fc_w"].T + w["fc_b"]))
            if prev == _END:
                break
            out.append(_PHONES[prev])
        return out


@lru_cache(maxsize=1)
def default_g2p() -> NeuralG2P:
    """A process-wide instance (loading the weights takes ~50 ms).

    Returns:
        The shared :class:`NeuralG2P`.
    """
    return NeuralG2P()
