"""Text normalisation exactly as the original evaluator applies it before computing WER.

Two variants existed in the original: ``general_utils.remove_punctuation`` and the evaluator's
``evaluate_model_helpers.remove_punctuation``, which additionally turns ``'- '`` into ``' '``.
Users' WER numbers come from the evaluator's one, so :func:`normalize_sentence` is that variant
and is what every WER in this project uses.
"""

from __future__ import annotations

import re

_NOT_ALLOWED = re.compile(r"[^a-zA-Z\- ']")


def remove_punctuation(sentence: str) -> str:
    """``general_utils.remove_punctuation``: keep ``[a-zA-Z- ']``, drop ``--``, ``" '"``->``"'"``, lowercase."""
    sentence = _NOT_ALLOWED.sub("", sentence)
    sentence = sentence.replace("--", "").replace(" '", "'")
    return " ".join(sentence.lower().strip().split())


def normalize_sentence(sentence: str) -> str:
    """The evaluator's normalisation (spec §8.2): as :func:`remove_punctuation`, plus ``'- '`` -> ``' '``."""
    sentence = _NOT_ALLOWED.sub("", sentence)
    sentence = sentence.replace("- ", " ")
    sentence = sentence.lower().replace("--", "").replace(" '", "'")
    return " ".join(tok for tok in sentence.strip().split(" ") if tok)
