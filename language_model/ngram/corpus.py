"""LM training text: stream corpus files and normalise them as the original recipe did.

The recipe's ``local/format_lm_data.py`` (spec §5.1) split lines into sentences with NLTK punkt
(unavailable offline; a regex splitter with an abbreviation list replaces it) and, per sentence:
URLs/e-mails/hashtags/handles -> letters only, doubled (never a dictionary word); dotted
abbreviations ``A.B.C.`` -> ``ABC``; typographic quotes/dashes/ellipses mapped; ``:`` and every
character but letters, whitespace and ``'`` -> space; stray quote-apostrophes removed; whitespace
collapsed; lower-cased; sentences with a one-letter word other than ``i``/``a`` dropped.

Differences, on purpose: numbers are verbalised (``1995`` -> ``nineteen ninety five``, ``3.5%`` ->
``three point five percent``) before the character filter instead of being deleted, unless
``number_words=False``; output is lower case (the LM's ``words.txt`` is), not upper case.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

# --------------------------------------------------------------------------- numbers to words
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()  # fmt: skip
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}  # fmt: skip


def number_to_words(n: int) -> str:
    """Cardinal English words without hyphens or "and": 1234 -> "one thousand two hundred thirty four"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    if n >= 10**15:
        return " ".join(_ONES[int(d)] for d in str(n))
    for value, name in _SCALES:
        if n >= value:
            rest = n % value
            return (
                number_to_words(n // value) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
            )
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    """21 -> "twenty first", 100 -> "one hundredth"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_words(n: int) -> str:
    """1995 -> "nineteen ninety five", 1900 -> "nineteen hundred", 2005 -> "two thousand five"."""
    if 2000 <= n < 2010 or n % 1000 == 0:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    return number_to_words(high) + " " + (number_to_words(low) if low >= 10 else "oh " + _ONES[low])


def _plural(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}" if head else last


_NUMBER = re.compile(
    r"(?<![A-Za-z0-9])(?P<cur>\$)?(?P<num>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?P<suf>st|nd|rd|th|s|'s)?(?P<pct>\s?%)?(?![\w])"
)


def _verbalise(m: re.Match) -> str:
    raw, frac, suf = m.group("num"), m.group("frac"), m.group("suf")
    n = int(raw.replace(",", ""))
    if suf in ("st", "nd", "rd", "th") and frac is None:
        text = ordinal_words(n)
    elif frac is None and "," not in raw and len(raw) == 4 and 1100 <= n <= 2099 and not m.group("cur"):
        text = year_words(n)
    elif m.group("cur") and frac is not None and len(frac) == 2:
        cents = int(frac)
        text = number_to_words(n) + (" dollar" if n == 1 else " dollars")
        return f" {text} " + (
            f"{number_to_words(cents)} {'cent' if cents == 1 else 'cents'} " if cents else ""
        )
    else:
        text = number_to_words(n)
        if frac is not None:
            text += " point " + " ".join(_ONES[int(d)] for d in frac)
    if suf in ("s", "'s"):
        text = _plural(text)
    if m.group("pct"):
        text += " percent"
    if m.group("cur"):
        text += " dollar" if n == 1 and frac is None else " dollars"
    return f" {text} "


def verbalize_numbers(text: str) -> str:
    """Replace digit groups (cardinals, ``1,000``, decimals, ordinals, years, ``$``, ``%``, ``1990s``)
    by words; digits glued to letters (``mp3``) are left alone for the character filter."""
    return _NUMBER.sub(_verbalise, text)


# --------------------------------------------------------------------------- sentences
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec "
    "mt ft no gen col lt sgt capt gov sen rep rev fig e.g i.e u.s".split()
)
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]\u201d\u2019]*\s+(?=[\"'(\[\u201c\u2018]*[A-Z0-9])")


def split_sentences(line: str) -> list[str]:
    """Regex sentence splitter: break after ``.!?`` (and closing quotes) before an upper-case letter or
    digit, except after common abbreviations and single-letter initials (``J. Smith``)."""
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
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
    }
)
_NOT_WORD_CHAR = re.compile(r"[^a-zA-Z\s']")


def normalize_lm_sentence(sentence: str, number_words: bool = True) -> str:
    """One sentence -> lower-case words (``''`` if the recipe would drop it)."""
    s = _URLISH.sub(lambda m: re.sub(r"\W|_", "", m.group(0)) * 2, sentence)
    s = _DOTTED_ABBREV.sub(lambda m: m.group(0).replace(".", ""), s)
    s = s.translate(_TYPOGRAPHIC)
    s = re.sub(r"\s+([.,])", r"\1", s).replace("', '", "','")
    if number_words:
        s = verbalize_numbers(s)
    s = _NOT_WORD_CHAR.sub(" ", s.replace(":", " "))
    s = " " + re.sub(r"'+$", "", " ".join(s.split())) + " "  # quote at the end of the line
    s = re.sub(r"(?<=\s)'+", "", s)  # quote at word start
    s = re.sub(r"(?<=[^s\s])'+(?=\s)", "", s)  # x' when x is not s
    s = re.sub(r"\s'+\s", " ", s)
    words = s.lower().split()
    if any(len(w) == 1 and w not in ("i", "a") for w in words):
        return ""
    return " ".join(words)


# --------------------------------------------------------------------------- streaming
def open_corpus(path: str | Path) -> io.TextIOBase:
    """A text stream for a corpus file (``.gz`` transparently; ``-`` is stdin)."""
    if str(path) == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_lines(paths: Iterable[str | Path]) -> Iterator[str]:
    """Lines of every corpus file in turn, read lazily (never a whole file in memory)."""
    for path in paths:
        with open_corpus(path) as f:
            yield from f


def normalized_sentences(
    lines: Iterable[str],
    number_words: bool = True,
    vocab: set[str] | None = None,
) -> Iterator[str]:
    """Normalised, non-empty sentences of a stream of lines; with ``vocab`` (the recipe without
    ``--unk``) sentences containing a word outside it are dropped."""
    for line in lines:
        for sentence in split_sentences(line):
            norm = normalize_lm_sentence(sentence, number_words=number_words)
            if norm and (vocab is None or all(w in vocab for w in norm.split())):
                yield norm
