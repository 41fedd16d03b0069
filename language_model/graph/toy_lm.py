"""A 20-word toy language model and synthetic CTC logits, for tests, benchmarks and demos.

``build_toy_lm(out_dir)`` writes a complete LM folder (``TLG.fst``, ``words.txt``, ``G.fst``,
``lm.arpa``, optionally an "unpruned" ``lm_no_prune.arpa`` / ``G_no_prune.fst``) with
``language_model.graph.build_lm_dir``. The vocabulary has homophones (to/two/too, red/read) that
only the bigram can tell apart. ``synthetic_logits(sentence)`` makes LM-order logits whose argmax
spells the sentence's phonemes (a few frames per phone, a blank after each, ``SIL`` after each word).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nejm_b2txt_utils.phonemes import N_CLASSES, PHONEME_TO_LM_ID

TOY_LEXICON: dict[str, list[str]] = {
    "i": ["AY"], "want": ["W", "AA", "N", "T"], "to": ["T", "UW"], "two": ["T", "UW"], "too": ["T", "UW"],
    "go": ["G", "OW"], "home": ["HH", "OW", "M"], "now": ["N", "AW"], "you": ["Y", "UW"],
    "need": ["N", "IY", "D"], "some": ["S", "AH", "M"], "water": ["W", "AO", "T", "ER"],
    "please": ["P", "L", "IY", "Z"], "help": ["HH", "EH", "L", "P"], "me": ["M", "IY"], "the": ["DH", "AH"],
    "door": ["D", "AO", "R"], "open": ["OW", "P", "AH", "N"], "red": ["R", "EH", "D"], "read": ["R", "EH", "D"],
}  # fmt: skip

#: Bigrams (log10 probabilities) of the toy LM; every word also has a unigram and a backoff weight.
_BIGRAMS = {
    ("<s>", "i"): -0.4, ("<s>", "please"): -0.8, ("<s>", "open"): -0.9, ("<s>", "you"): -0.9,
    ("i", "want"): -0.4, ("i", "need"): -0.4, ("i", "read"): -0.9, ("want", "to"): -0.2,
    ("to", "go"): -0.3, ("go", "home"): -0.3, ("home", "</s>"): -0.1, ("home", "now"): -0.7,
    ("now", "</s>"): -0.1, ("need", "some"): -0.5, ("need", "water"): -0.5, ("some", "water"): -0.2,
    ("water", "</s>"): -0.1, ("please", "help"): -0.2, ("help", "me"): -0.2, ("me", "</s>"): -0.2,
    ("open", "the"): -0.2, ("the", "door"): -0.3, ("the", "red"): -0.6, ("red", "door"): -0.3,
    ("read", "the"): -0.3, ("door", "</s>"): -0.1, ("you", "need"): -0.4, ("you", "want"): -0.5,
}  # fmt: skip
#: Extra bigrams only in the "unpruned" ARPA (for ``--rescore`` tests).
_UNPRUNED_EXTRA = {("want", "two"): -0.1, ("two", "go"): -0.1}


def toy_arpa_text(extra_bigrams: dict[tuple[str, str], float] | None = None) -> str:
    """The toy bigram ARPA (hand-set probabilities, not normalised; kaldilm does not require it).

    Args:
        extra_bigrams: more ``(w1, w2) -> log10 p`` bigrams (the "unpruned" model).

    Returns:
        The ARPA text.
    """
    bigrams = dict(_BIGRAMS)
    bigrams.update(extra_bigrams or {})
    unigrams = {w: -1.4 for w in TOY_LEXICON}
    unigrams.update({"too": -1.9, "read": -1.6, "two": -1.6, "</s>": -1.0})
    lines = ["\\data\\", f"ngram 1={len(unigrams) + 1}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    lines.append("-99 <s> -0.3")
    lines.extend(f"{p} {w}" + ("" if w == "</s>" else " -0.3") for w, p in sorted(unigrams.items()))
    lines += ["", "\\2-grams:"]
    lines.extend(f"{p} {a} {b}" for (a, b), p in sorted(bigrams.items()))
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def build_toy_lm(out_dir: str | os.PathLike, sil_prob: float = 0.5, with_unpruned: bool = False) -> Path:
    """Write the toy LM folder with :func:`language_model.graph.tlg.build_lm_dir`.

    Args:
        out_dir: the LM folder.
        sil_prob: optional-silence probability.
        with_unpruned: also write ``G_no_prune.fst`` (two extra bigrams) for ``--rescore``.

    Returns:
        The folder's path.
    """
    from language_model.graph.tlg import build_lm_dir

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    arpa = out_dir.parent / f".{out_dir.name}.arpa"
    arpa.write_text(toy_arpa_text(), encoding="utf-8")
    unpruned = None
    if with_unpruned:
        unpruned = out_dir.parent / f".{out_dir.name}.unpruned.arpa"
        unpruned.write_text(toy_arpa_text(_UNPRUNED_EXTRA), encoding="utf-8")
    try:
        return build_lm_dir(TOY_LEXICON, arpa, out_dir, sil_prob=sil_prob, unpruned_arpa_path=unpruned)
    finally:
        arpa.unlink(missing_ok=True)
        if unpruned is not None:
            unpruned.unlink(missing_ok=True)


def sentence_lm_ids(
    sentence: str, lexicon: dict[str, list[str]] | None = None, frames_per_phone: int = 2, sil_frames: int = 2
) -> list[int]:
    """LM-order class ids per frame: each phone ``frames_per_phone`` times then a blank; SIL after words.

    Args:
        sentence: words of ``lexicon``.
        lexicon: word -> phones (default: the toy lexicon).
        frames_per_phone: frames per phone.
        sil_frames: SIL frames after each word.

    Returns:
        One LM-order class id (0..40) per 80 ms frame.

    Raises:
        KeyError: a word outside the lexicon.
    """
    lex = lexicon or TOY_LEXICON
    ids: list[int] = []
    for word in sentence.lower().split():
        if word not in lex:
            raise KeyError(f"word {word!r} is not in the lexicon")
        for phone in lex[word]:
            ids += [PHONEME_TO_LM_ID[phone]] * frames_per_phone + [0]
        ids += [PHONEME_TO_LM_ID["SIL"]] * sil_frames + [0]
    return ids


def synthetic_logits(
    sentence: str,
    seed: int = 0,
    peak: float = 12.0,
    lexicon: dict[str, list[str]] | None = None,
    frames_per_phone: int = 2,
) -> np.ndarray:
    """``[T, 41]`` float32 LM-order logits: N(0, 1) noise plus ``peak`` on the sentence's class per frame.

    Args:
        sentence: words of ``lexicon``.
        seed: noise seed.
        peak: added to the target class's logit (larger: more confident).
        lexicon: word -> phones (default: the toy lexicon).
        frames_per_phone: frames per phone.

    Returns:
        ``[T, 41]`` float32 logits (T frames of 80 ms).

    Raises:
        KeyError: a word outside the lexicon.
    """
    ids = sentence_lm_ids(sentence, lexicon, frames_per_phone)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(ids), N_CLASSES)).astype(np.float32)
    x[np.arange(len(ids)), ids] += peak
    return x


def long_synthetic_logits(frames: int, sentences: list[str], seed: int = 0) -> np.ndarray:
    """``[frames, 41]`` logits of random ``sentences`` (toy lexicon) one after another, cut at ``frames``: an
    utterance of any length for load and size-limit tests.

    Args:
        frames: the length (80 ms frames).
        sentences: the sentences to draw from (words of the toy lexicon).
        seed: picks the sentences and their noise.

    Returns:
        ``[frames, 41]`` float32 LM-order logits.
    """
    rng = np.random.default_rng(seed)
    parts, n = [], 0
    while n < frames:
        x = synthetic_logits(sentences[int(rng.integers(len(sentences)))], seed=int(rng.integers(1 << 30)))
        parts.append(x)
        n += len(x)
    return np.concatenate(parts)[:frames]
