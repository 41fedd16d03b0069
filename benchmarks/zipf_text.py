"""Generated Zipf-like English text for the LM build/size benchmarks, streamed and vectorised.

Sentences of 4-14 words drawn i.i.d. from the ``top_words`` most frequent English words of ``wordfreq`` that are
in the CMU dictionary (no G2P needed), with probabilities proportional to their ``wordfreq`` frequencies: the
distribution of ``lm_decode_latency.zipf_corpus``, drawn with numpy in blocks (~3M words/s instead of ~0.1M), so
a 100M-word corpus takes about a minute. A pessimistic corpus for an n-gram LM: no syntax, so almost every
4-gram is new.

    python benchmarks/zipf_text.py OUT.txt --words 100000000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def zipf_vocabulary(top_words: int = 30_000) -> tuple[list[str], np.ndarray]:
    """The words and their probabilities.

    Args:
        top_words: how many of wordfreq's most frequent English words to consider.

    Returns:
        ``(words, probabilities [len(words)])``.
    """
    import wordfreq

    from nejm_b2txt_utils.lexicon import cmu_dictionary

    cmu = cmu_dictionary()
    words = [w for w in wordfreq.top_n_list("en", top_words) if w in cmu]
    freqs = wordfreq.get_frequency_dict("en")
    weights = np.array([freqs[w] for w in words])
    return words, weights / weights.sum()


def zipf_sentences(n_words: int, seed: int = 0, top_words: int = 30_000, block: int = 1_000_000) -> Iterator[str]:
    """Sentences (no newline) until at least ``n_words`` words were produced.

    Args:
        n_words: total words wanted.
        seed: random seed.
        top_words: vocabulary size before the CMU filter.
        block: words drawn per numpy call.

    Returns:
        An iterator of sentences.
    """
    words, probs = zipf_vocabulary(top_words)
    vocab = np.array(words, dtype=object)
    cum = np.cumsum(probs)
    rng = np.random.default_rng(seed)
    produced = 0
    while produced < n_words:
        lengths = rng.integers(4, 15, size=block // 9)  # [s] sentence lengths 4..14
        ids = np.minimum(np.searchsorted(cum, rng.random(int(lengths.sum()))), len(words) - 1)
        tokens = vocab[ids].tolist()
        starts = np.concatenate([[0], np.cumsum(lengths)])
        for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
            yield " ".join(tokens[a:b])
            produced += b - a
            if produced >= n_words:
                return


def write_zipf_corpus(path: Path, n_words: int, seed: int = 0) -> dict:
    """Write ``n_words`` words of generated text, one sentence per line.

    Args:
        path: the output file.
        n_words: words to write (the last sentence may overshoot).
        seed: random seed.

    Returns:
        ``{"words": ..., "bytes": ...}``.
    """
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        for s in zipf_sentences(n_words, seed):
            f.write(s + "\n")
            written += s.count(" ") + 1
    return {"words": written, "bytes": path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--words", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.words < 1:
        p.error(f"--words must be >= 1, got {args.words}")
    print(write_zipf_corpus(args.out, args.words, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
