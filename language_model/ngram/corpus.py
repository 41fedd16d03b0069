"""LM training text: stream corpus files and normalise them as the original recipe did.

The recipe's ``local/format_lm_data.py`` (spec §5.1) split lines into sentences with NLTK punkt
(unavailable offline; a regex splitter with an abbreviation list replaces it) and, per sentence:
URLs/e-mails/hashtags/handles -> letters only, doubled (never a dictionary word); dotted
abbreviations ``A.B.C.`` -> ``ABC``; typographic quotes/dashes/ellipses mapped; ``:`` and every
character but letters, whitespace and ``'`` -> space; stray quote-apostrophes removed; whitespace
collapsed; lower-cased; sentences with a one-letter word other than ``i``/``a`` dropped. The character
level (quotes, dashes, digits, case) is :func:`nejm_b2txt_utils.text.normalize_text`, shared with the labels
and WER.

Differences, on purpose: numbers are verbalised (``1995`` -> ``nineteen ninety five``, ``3.5%`` ->
``three point five percent``) before the character filter instead of being deleted, unless
``number_words=False``; output is lower case (the LM's ``words.txt`` is), not upper case.
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nejm_b2txt_utils.text import normalize_text

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- sentences
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec "
    "mt ft no gen col lt sgt capt gov sen rep rev fig e.g i.e u.s".split()
)
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]\u201d\u2019]*\s+(?=[\"'(\[\u201c\u2018]*[A-Z0-9])")


def split_sentences(line: str) -> list[str]:
    """Regex sentence splitter: break after ``.!?`` (and closing quotes) before an upper-case letter or
    digit, except after common abbreviations and single-letter initials (``J. Smith``).

    Args:
        line: a line of text.

    Returns:
        The non-empty sentences, stripped.
    """
    out, start = [], 0
    for m in _BOUNDARY.finditer(line):
        head = line[start : m.start()].rstrip("\"')]\u201d\u2019")
        last = head.split()[-1] if head.split() else ""
        token = last.rstrip(".!?").lower()
        if last.endswith(".") and (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())):
            continue
        out.append(line[start : m.start()])
        start = m.end()
    out.append(line[start:])
    return [s.strip() for s in out if s.strip()]


_URLISH = re.compile(
    r"(?:https?://|www\.)\S+|\S+@\S+\.\w+|[#@]\w+|\b\w+(?:\.\w+)*\.(?:com|org|net|edu|gov|io|co|uk|de)\b\S*",
    re.IGNORECASE,
)
_DOTTED_ABBREV = re.compile(r"\b(?:[A-Za-z]\.){2,}")
def normalize_lm_sentence(sentence: str, number_words: bool = True) -> str:
    """One sentence -> lower-case words, or ``''`` if the recipe would drop it.

    The corpus filtering of the recipe (URLs, e-mails, hashtags, handles -> their letters doubled; dotted
    abbreviations joined; sentences with a one-letter word other than ``i``/``a`` dropped) around the
    project's one normalisation :func:`nejm_b2txt_utils.text.normalize_text` (the labels and WER use it too).

    Args:
        sentence: one sentence of corpus text.
        number_words: speak digit groups (``False``: delete them, as the original recipe).

    Returns:
        The normalised sentence (words separated by single spaces), or ``''``.
    """
    s = _URLISH.sub(lambda m: re.sub(r"\W|_", "", m.group(0)) * 2, sentence)
    s = _DOTTED_ABBREV.sub(lambda m: m.group(0).replace(".", ""), s)
    words = normalize_text(s, number_words=number_words).split()
    if any(len(w) == 1 and w not in ("i", "a") for w in words):
        return ""
    return " ".join(words)


#: A line that is already one normalised sentence (lower-case words of letters with inner apostrophes, single
#: spaces, no one-letter word but "a"/"i"): normalisation returns it unchanged, so it skips the per-sentence rules (large
#: generated or pre-normalised corpora go ~10x faster).
_NORMAL_WORD = r"(?:[b-hj-z][a-z]+|[ai][a-z]*|[a-z]+'[a-z]+)"
_ALREADY_NORMAL = re.compile(f"{_NORMAL_WORD}(?: {_NORMAL_WORD})*")
#: Lower-case words and apostrophes only, with a one-letter word other than "a"/"i": normalisation drops it.
_LOWER_WORDS = re.compile(r"[a-z' ]+")
_ONE_LETTER_WORD = re.compile(r"(?:^| )[b-hj-z](?= |$)")


# --------------------------------------------------------------------------- streaming
def check_encoding(encoding: str) -> str:
    """The codec name if ``encoding`` can be read line by line from bytes (ASCII-compatible).

    Args:
        encoding: a Python codec name (``utf-8``, ``latin-1``, ``cp1252``...).

    Returns:
        The codec's canonical name.

    Raises:
        ValueError: unknown, or not ASCII-compatible (UTF-16/32: lines cannot be split on ``\\n`` bytes).
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if "\n a".encode(name, errors="replace") != b"\n a":
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible; convert the corpus to UTF-8 first")
    return name


def open_corpus(path: str | Path) -> io.BufferedIOBase:
    """A binary stream for a corpus file (``.gz`` transparently; ``-`` is stdin).

    Args:
        path: the file.

    Returns:
        An open binary stream (lines are decoded by :func:`iter_lines`).
    """
    if str(path) == "-":
        return sys.stdin.buffer
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


@dataclass
class DecodeStats:
    """Lines :func:`iter_lines` skipped because they were not valid text in the encoding."""

    undecodable_lines: int = 0


def iter_lines(paths: Iterable[str | Path], encoding: str = "utf-8",
               stats: DecodeStats | None = None) -> Iterator[str]:
    """Lines of every corpus file in turn, read lazily (never a whole file in memory).

    A line that is not valid ``encoding`` is skipped, never decoded with replacement characters (a Latin-1
    ``caf\\xe9`` read as UTF-8 became the word ``caf``); each file with such lines logs one warning with their
    count and the first line number.

    Args:
        paths: the files (``-`` = stdin).
        encoding: the files' text encoding (ASCII-compatible, see :func:`check_encoding`).
        stats: if given, counts the skipped lines.

    Returns:
        An iterator of decoded lines (with their newlines).

    Raises:
        OSError: a file cannot be read (e.g. a ``.gz`` that is not gzip).
    """
    for path in paths:
        bad = first_bad = 0
        with open_corpus(path) as f:
            for n, raw in enumerate(f, 1):
                try:
                    yield raw.decode(encoding)
                except UnicodeDecodeError:
                    bad += 1
                    first_bad = first_bad or n
        if bad:
            log.warning("%s: %d line(s) are not valid %s and were skipped (first: line %d); give --encoding if "
                        "the file uses another one", path, bad, encoding, first_bad)
            if stats is not None:
                stats.undecodable_lines += bad


def normalized_sentences(
    lines: Iterable[str],
    number_words: bool = True,
    vocab: set[str] | None = None,
) -> Iterator[str]:
    """Normalised, non-empty sentences of a stream of lines.

    Args:
        lines: text lines.
        number_words: speak digit groups.
        vocab: the recipe without ``--unk``: sentences with a word outside it are dropped.

    Returns:
        An iterator of normalised sentences.
    """
    for line in lines:
        plain = line.rstrip("\n")
        if _LOWER_WORDS.fullmatch(plain):  # fast paths (a character class: cheap) for pre-normalised text
            if _ONE_LETTER_WORD.search(plain):  # the recipe drops it
                continue
            if ("'" not in plain and "  " not in plain and plain[0] != " " and plain[-1] != " ") or \
                    _ALREADY_NORMAL.fullmatch(plain):  # normalisation would return it unchanged
                if vocab is None or all(w in vocab for w in plain.split(" ")):
                    yield plain
                continue
        for sentence in split_sentences(line):
            norm = normalize_lm_sentence(sentence, number_words=number_words)
            if norm and (vocab is None or all(w in vocab for w in norm.split())):
                yield norm
