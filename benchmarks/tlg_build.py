"""Benchmark: LM folder (TLG) build time and peak RSS; prints one JSON object.

Cases (each runs ``language_model/build_lm.py`` in a fresh subprocess; its own ``build_info.json``
gives the in-process peak RSS):

* ``unigram_wordfreq``: the wordfreq 1-gram over the full CMU vocabulary (126k words), the offline
  ``openwebtext_1gram_lm_sil``;
* ``trigram``: a Katz 3-gram from a ~40k-sentence corpus (``--corpus FILE``, e.g. the
  ``lm_corpus.txt`` of ``python -m nejm_b2txt_utils.synthetic``; generated here otherwise) over the
  CMU + corpus vocabulary, as the original's 3-gram;
* ``big`` (``--big``): a 3-gram from a 10M-word corpus (half grammar sentences when the synthetic
  generator is importable, half Zipf word sequences from wordfreq: a pessimistic, high-diversity
  text), pruned at ``--big_prune``;
* ``streamed_<N>`` (``--streamed_words N ...``): the issue-20 path at scale, ``build_lm.py --streamed --order 4
  --vocab corpus --first_pass_ngrams 300000`` on N words of ``zipf_text.py`` text (the full 4-gram as
  ``ngram_store/``, the pruned first pass as TLG): wall, peak RSS, seconds per stage, n-grams per order (full
  and first pass), store and folder bytes. Target (issue 20): 100M words in < 1 h at < 12 GB on 2 cores.

    python -m benchmarks.tlg_build [--corpus lm_corpus.txt] [--big [--big_corpus FILE]] [--work DIR]
    python -m benchmarks.tlg_build --only_streamed --streamed_words 1000000 10000000
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import print_result
from nejm_b2txt_utils.cli_errors import check_flags, check_output_folder, exit_2_on_bad_input

REPO = Path(__file__).resolve().parents[1]
BUILD_LM = REPO / "language_model" / "build_lm.py"
log = logging.getLogger("tlg_build")


def _grammar_sentences(n: int, seed: int) -> list[str] | None:
    try:
        from nejm_b2txt_utils.synthetic import lm_corpus_sentences
    except ImportError as exc:  # the LM env has no h5py, which the synthetic package imports
        log.info("synthetic sentence generator unavailable (%s); using Zipf text only", exc)
        return None
    return lm_corpus_sentences(n, seed)


def _zipf_sentences(n_words: int, seed: int, vocab_size: int = 50_000):
    import wordfreq

    rng = random.Random(seed)
    words = wordfreq.top_n_list("en", vocab_size)
    freqs = wordfreq.get_frequency_dict("en")
    cumulative = list(itertools.accumulate(freqs.get(w, 0.0) for w in words))
    produced = 0
    while produced < n_words:
        length = rng.randint(4, 20)
        produced += length
        yield " ".join(rng.choices(words, cum_weights=cumulative, k=length))


def make_corpus(path: Path, n_words: int, seed: int = 0) -> dict:
    """Write a ``n_words`` corpus: half grammar sentences (if available), the rest Zipf text."""
    t0 = time.perf_counter()
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        chunk = 0
        while written < n_words // 2:
            grammar = _grammar_sentences(40_000, seed + chunk)
            if grammar is None:
                break
            for s in grammar:
                f.write(s + "\n")
                written += len(s.split())
            chunk += 1
        for s in _zipf_sentences(n_words - written, seed):
            f.write(s + "\n")
            written += len(s.split())
    return {"words": written, "bytes": path.stat().st_size, "seconds": round(time.perf_counter() - t0, 1)}


def run_build(argv: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BUILD_LM), *argv, "--out", str(out), "--force"],
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"build_lm.py {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    info = json.loads((out / "build_info.json").read_text())
    from language_model.graph.fst_io import read_fst

    tlg = read_fst(out / "TLG.fst")
    return {
        "wall_seconds": round(wall, 1),
        "build_seconds": info["total_seconds"],
        "arpa_seconds": info["arpa_seconds"],
        "graph_seconds": round(info["total_seconds"] - info["arpa_seconds"], 1),
        "peak_rss_mb": info["peak_rss_mb"],
        "vocabulary": info["vocabulary"],
        "ngrams": info["ngrams"],
        "tlg_states": tlg.num_states,
        "tlg_mb": round(info["tlg_bytes"] / 2**20, 1),
    }


def run_streamed(n_words: int, work: Path, first_pass_ngrams: int, order: int) -> dict:
    """One ``streamed_<N>`` case (see the module docstring)."""
    from benchmarks.zipf_text import write_zipf_corpus

    corpus = work / f"zipf_{n_words}.txt"
    t0 = time.perf_counter()
    gen = write_zipf_corpus(corpus, n_words) if not corpus.is_file() else {"bytes": corpus.stat().st_size}
    gen["seconds"] = round(time.perf_counter() - t0, 1)
    out = work / f"streamed_{n_words}"
    argv = ["--corpus", str(corpus), "--order", str(order), "--vocab", "corpus", "--first_pass_ngrams",
            str(first_pass_ngrams)]  # fmt: skip
    result = run_build(argv, out)
    info = json.loads((out / "build_info.json").read_text())
    folder_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    result.update(corpus=gen, tokens=info["tokens"], ngrams_full=info["ngrams_full"], stage_seconds=info["stage_seconds"],
                  store_mb=round(info["store_bytes"] / 2**20, 1), folder_mb=round(folder_bytes / 2**20, 1))  # fmt: skip
    return result


@exit_2_on_bad_input()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, help="3-gram training text (default: generated, ~320k words)")
    p.add_argument("--big", action="store_true", help="also build from a 10M-word corpus (minutes)")
    p.add_argument("--big_corpus", type=Path, help="10M-word text to use instead of generating one")
    p.add_argument("--big_words", type=int, default=10_000_000)
    p.add_argument("--big_prune", type=float, default=1e-7)
    p.add_argument("--streamed_words", type=int, nargs="*", default=[], metavar="N",
                   help="also build the streamed 4-gram + pruned first pass from N generated words (each N)")
    p.add_argument("--first_pass_ngrams", type=int, default=300_000, help="first-pass budget of the streamed cases")
    p.add_argument("--only_streamed", action="store_true", help="skip the unigram and 3-gram cases")
    p.add_argument("--work", type=Path, help="keep the built folders here (default: a temporary folder)")
    args = p.parse_args(argv)
    check_flags(args, {"big_words": 1, "big_prune": 0, "first_pass_ngrams": 1})
    check_output_folder("--work", args.work)
    if any(n < 1 for n in args.streamed_words):
        p.error(f"--streamed_words must be >= 1, got {args.streamed_words}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="tlg_build-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                    "load_average": os.getloadavg()}}  # fmt: skip
        for n_words in args.streamed_words:
            log.info("streamed 4-gram build from %d generated words", n_words)
            result[f"streamed_{n_words}"] = run_streamed(n_words, work, args.first_pass_ngrams, 4)
        if args.only_streamed:
            print_result(result)
            return 0
        log.info("building the wordfreq 1-gram over the CMU vocabulary")
        result["unigram_wordfreq"] = run_build(["--unigram_wordfreq"], work / "unigram")
        corpus = args.corpus
        if corpus is None:
            corpus = work / "corpus_small.txt"
            result["trigram_corpus"] = make_corpus(corpus, 320_000)
        log.info("building a Katz 3-gram from %s", corpus)
        result["trigram"] = run_build(["--corpus", str(corpus), "--order", "3"], work / "trigram")
        if args.big:
            big = args.big_corpus
            if big is None:
                big = work / "corpus_10M.txt"
                log.info("writing a %d-word corpus", args.big_words)
                result["big_corpus"] = make_corpus(big, args.big_words)
            else:
                result["big_corpus"] = {"file": str(big), "bytes": big.stat().st_size}
            log.info("building a pruned Katz 3-gram from it")
            result["big_trigram"] = run_build(
                ["--corpus", str(big), "--order", "3", "--prune", str(args.big_prune), "--keep_unpruned"],
                work / "big_trigram",
            )
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
