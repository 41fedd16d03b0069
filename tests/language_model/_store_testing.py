"""An LM folder in the original's layout over the toy words, from ARPAs estimated on a small corpus (orders
3-4, pruned first-pass G/TLG plus the unpruned G_no_prune.fst), optionally with an n-gram store."""

from __future__ import annotations

import random
from pathlib import Path

from language_model.graph.toy_lm import TOY_LEXICON

#: Sentences of the toy words the corpus repeats (and the server tests decode).
TOY_SENTENCES = ["i need water", "please help me", "open the door", "i want to go home", "you need some water",
                 "help me now", "go home now", "open the red door", "i read the door", "you want to go home now"]


def toy_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """The toy sentences, plus random word strings so that every order has back-off paths to take."""
    rng = random.Random(seed)
    words = sorted(TOY_LEXICON)
    return [rng.choice(TOY_SENTENCES) if rng.random() < 0.7 else " ".join(rng.choices(words, k=rng.randint(2, 7)))
            for _ in range(n)]


def build_original_layout_lm(out: Path, order: int = 3, prune: float = 3e-3, seed: int = 0) -> Path:
    """TLG.fst/G.fst from the pruned ARPA, G_no_prune.fst from the unpruned one (as the original's folders).

    Returns:
        The LM folder (``lm.arpa``, ``lm_no_prune.arpa`` inside).
    """
    from language_model.graph.tlg import build_lm_dir
    from language_model.ngram.train import write_arpa_katz

    out.parent.mkdir(parents=True, exist_ok=True)
    arpa, full = out.parent / f".{out.name}.arpa", out.parent / f".{out.name}.full.arpa"
    write_arpa_katz(toy_corpus(seed=seed), order, arpa, prune=prune, unpruned_path=full, vocab=sorted(TOY_LEXICON))
    try:
        return build_lm_dir(TOY_LEXICON, arpa, out, unpruned_arpa_path=full)
    finally:
        arpa.unlink(missing_ok=True)
        full.unlink(missing_ok=True)
