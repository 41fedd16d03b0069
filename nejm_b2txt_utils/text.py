"""Text normalisation: the one shared by the LM corpus, the labels and WER, and the original's for reproduction.

:func:`normalize_text` (``text_norm="b2txt"``, the default everywhere) turns a sentence as people write it
into the words the LM can output: typographic quotes, apostrophes and dashes mapped to ASCII, accents
folded (``café`` -> ``cafe``), digits spoken (``50`` -> ``fifty``, ``1995`` -> ``nineteen ninety five``,
``3.5%`` -> ``three point five percent``), hyphens and dashes split words (``well-known`` -> ``well known``),
every other character but letters and word-internal apostrophes dropped, lower case. The LM corpus
normaliser (``language_model``) adds only corpus filtering (URLs, dotted abbreviations, sentences with a
stray one-letter word) around it, so a correct decode scores WER 0.

The original had two variants, kept exact for reproducing published numbers (``text_norm="original"``):
``general_utils.remove_punctuation`` (:func:`remove_punctuation`) and the evaluator's
``evaluate_model_helpers.remove_punctuation`` (:func:`normalize_sentence`), which additionally turns
``'- '`` into ``' '``. Both delete digits and keep hyphens, so ``50 turns`` vs ``fifty turns`` or
``well-known`` vs ``well known`` count as errors there.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["submission_text", "TEXT_NORMS", "DEFAULT_TEXT_NORM", "normalize_text", "normalize_for_wer", "normalize_sentence",
           "remove_punctuation", "number_to_words", "ordinal_words", "year_words", "verbalize_numbers",
           "fold_typography"]

# --------------------------------------------------------------------------- the original's (exact)
_NOT_ALLOWED = re.compile(r"[^a-zA-Z\- ']")


_NOT_SUBMISSION = re.compile(r"[^a-z' ]")


def submission_text(sentence: str) -> str:
    """A decoded sentence as the submission CSV holds it: lower-case letters, single spaces and apostrophes.

    The LM vocabulary keeps CMU words with ``-`` or ``.`` (``bas-reliefs``, ``a.m.``, ``u.s.``: 1,126 of them);
    hyphens become spaces, periods and any other character are dropped.

    Args:
        sentence: the LM's sentence.

    Returns:
        E.g. ``"the bas reliefs at am in the us"`` for ``"the bas-reliefs at a.m. in the u.s."``.
    """
    text = sentence.lower().replace("-", " ")
    return " ".join(_NOT_SUBMISSION.sub("", text).split())


def remove_punctuation(sentence: str) -> str:
    """``general_utils.remove_punctuation``: keep ``[a-zA-Z- ']``, drop ``--``, ``" '"``->``"'"``, lowercase."""
    sentence = _NOT_ALLOWED.sub("", sentence)
    sentence = sentence.replace("--", "").replace(" '", "'")
    return " ".join(sentence.lower().strip().split())


def normalize_sentence(sentence: str) -> str:
    """The original evaluator's normalisation (spec §8.2): as :func:`remove_punctuation`, plus ``'- '`` -> ``' '``."""
    sentence = _NOT_ALLOWED.sub("", sentence)
    sentence = sentence.replace("- ", " ")
    sentence = sentence.lower().replace("--", "").replace(" '", "'")
    return " ".join(tok for tok in sentence.strip().split(" ") if tok)


# --------------------------------------------------------------------------- numbers to words
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}


def number_to_words(n: int) -> str:
    """Cardinal English words without hyphens or "and": 1234 -> "one thousand two hundred thirty four".

    Args:
        n: any integer (negative: "minus ..."; 10**15 and above: digit by digit).

    Returns:
        Lower-case words separated by single spaces.
    """
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
            return number_to_words(n // value) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
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
        return f" {text} " + (f"{number_to_words(cents)} {'cent' if cents == 1 else 'cents'} " if cents else "")
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


# --------------------------------------------------------------------------- the shared normalisation
_TYPOGRAPHIC = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u02bc": "'", "\u2032": "'", "\u00b4": "'",
    "`": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...",
})
_NOT_WORD_CHAR = re.compile(r"[^a-zA-Z\s']")


def fold_typography(text: str) -> str:
    """Typographic quotes, apostrophes, dashes and ellipses to ASCII; accents folded (``é`` -> ``e``)."""
    text = text.translate(_TYPOGRAPHIC)
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalize_text(sentence: str, number_words: bool = True) -> str:
    """The project's one normalisation (LM corpus, labels, WER): see the module docstring.

    Args:
        sentence: text as written (any case, punctuation, digits, Unicode quotes and dashes).
        number_words: speak digit groups (``False``: digits are dropped, as the original recipe's LM corpus).

    Returns:
        Lower-case words joined by single spaces (``''`` for no words). Idempotent.
    """
    s = fold_typography(sentence)
    s = re.sub(r"\s+([.,])", r"\1", s).replace("', '", "','")
    if number_words:
        s = verbalize_numbers(s)
    s = _NOT_WORD_CHAR.sub(" ", s)
    s = " " + re.sub(r"'+$", "", " ".join(s.split())) + " "  # quote at the end of the line
    s = re.sub(r"(?<=\s)'+", "", s)  # quote at word start
    s = re.sub(r"(?<=[^s\s])'+(?=\s)", "", s)  # x' when x is not s
    s = re.sub(r"\s'+\s", " ", s)
    return " ".join(s.lower().split())


#: WER normalisations by name: ``b2txt`` (this project's, the default) and ``original`` (the evaluator's exact).
TEXT_NORMS: dict[str, Callable[[str], str]] = {"b2txt": normalize_text, "original": normalize_sentence}
DEFAULT_TEXT_NORM = "b2txt"


def normalize_for_wer(sentence: str, text_norm: str = DEFAULT_TEXT_NORM) -> str:
    """``sentence`` normalised by the named WER normalisation.

    Args:
        sentence: a reference or decoded sentence.
        text_norm: a key of :data:`TEXT_NORMS`.

    Returns:
        The normalised sentence.

    Raises:
        ValueError: unknown ``text_norm``.
    """
    try:
        norm = TEXT_NORMS[text_norm]
    except KeyError:
        raise ValueError(f"text_norm {text_norm!r}: expected one of {sorted(TEXT_NORMS)}") from None
    return norm(sentence)
