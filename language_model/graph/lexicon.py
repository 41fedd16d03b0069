"""The LM's pronunciation lexicon: vocabulary -> stress-free phones, and Kaldi's disambiguation.

Pronunciations come from ``nejm_b2txt_utils.lexicon.Lexicon`` (CMU first pronunciation, stress
stripped; offline neural G2P for words outside the dictionary), words are lower-case as in the
original's output sentences. ``add_lex_disambig`` is Kaldi's ``add_lex_disambig.pl``: homophones and
pronunciations that are a prefix of another one get ``#1``, ``#2``, ... appended.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence

from tqdm import tqdm

from nejm_b2txt_utils.lexicon import Lexicon, cmu_dictionary

log = logging.getLogger(__name__)


def cmu_words() -> list[str]:
    """All words of the CMU dictionary (lower-case), sorted.

    Returns:
        The words.
    """
    return sorted(cmu_dictionary())


def lexicon_for_words(words: Iterable[str], lexicon: Lexicon | None = None) -> dict[str, list[str]]:
    """Pronunciations for a vocabulary (CMU first pronunciation, G2P for the rest).

    Args:
        words: the vocabulary (lower-cased here).
        lexicon: the lexicon (default: ``nejm_b2txt_utils.lexicon.default_lexicon``).

    Returns:
        ``{word: stress-free phones}``; words that get no pronunciation are dropped.
    """
    lex = lexicon or Lexicon()
    unique = sorted({w.lower() for w in words})
    n_g2p = sum(1 for w in unique if not lex.in_cmu(w))
    out: dict[str, list[str]] = {}
    items = tqdm(unique, desc="pronunciations", unit="word", disable=n_g2p < 200, mininterval=2.0)
    for word in items:
        phones = lex.pronounce(word)
        if phones:
            out[word] = phones
    dropped = len(unique) - len(out)
    log.info("lexicon: %d words (%d via G2P), %d without a pronunciation dropped", len(out), n_g2p, dropped)
    return out


def add_lex_disambig(
    entries: Sequence[tuple[str, Sequence[str]]],
) -> tuple[list[tuple[str, list[str]]], int]:
    """Kaldi ``add_lex_disambig.pl``: append ``#k`` to homophones and to prefixes of other prons.

    Entries are numbered in the given order (``#1`` for the first, ``#2`` for the next with the same phones).

    Args:
        entries: ``(word, phones)`` pairs.

    Returns:
        ``(new entries, largest k used)`` (0 if none).
    """
    count = Counter(tuple(phones) for _, phones in entries)
    prefixes: set[tuple[str, ...]] = set()
    for _, phones in entries:
        for n in range(1, len(phones)):
            prefixes.add(tuple(phones[:n]))
    next_id: dict[tuple[str, ...], int] = {}
    out: list[tuple[str, list[str]]] = []
    max_disambig = 0
    for word, phones in entries:
        key = tuple(phones)
        if count[key] == 1 and key not in prefixes:
            out.append((word, list(phones)))
            continue
        k = next_id.get(key, 0) + 1
        next_id[key] = k
        max_disambig = max(max_disambig, k)
        out.append((word, [*phones, f"#{k}"]))
    return out, max_disambig


def write_lexicon(entries: Iterable[tuple[str, Sequence[str]]], path: str | os.PathLike) -> None:
    """``lexicon.txt``: ``word<TAB>PH1 PH2 ...`` per line.

    Args:
        entries: ``(word, phones)`` pairs, in the order to write.
        path: the output file (inside the build's temporary folder).
    """
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{word}\t{' '.join(phones)}\n" for word, phones in entries)


def read_lexicon(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read ``lexicon.txt`` (``word`` then phones, whitespace separated); the first entry of a word wins.

    Args:
        path: the file.

    Returns:
        ``{word: phones}``.

    Raises:
        ValueError: a line with a word but no phones (message: file, line).
    """
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{n}: expected 'word PH1 PH2 ...', got {line.rstrip()!r}")
            out.setdefault(parts[0], parts[1:])
    return out
