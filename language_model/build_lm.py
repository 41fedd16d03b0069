"""Build an n-gram LM folder (``TLG.fst``, ``words.txt``, ``G.fst``, ``lm.arpa``, ...) for the LM server.

The pip-only replacement of the original recipe ``examples/speech/s0/run.sh`` (spec §5):

    python language_model/build_lm.py --corpus text.txt --order 3 --out lm_dir [--prune 1e-9]
    python language_model/build_lm.py --unigram_wordfreq --out \\
        language_model/pretrained_language_models/openwebtext_1gram_lm_sil

Corpus mode: normalise the text (``corpus.py``, streamed to a temporary file), pick the vocabulary
(CMU dictionary + corpus words by default; words outside the CMU dictionary get G2P
pronunciations), estimate the ARPA (SRILM-default Good-Turing/Katz or modified Kneser-Ney, count
cut-offs, relative-entropy pruning) and compile the graph (``graph.build_lm_dir``).
``--unigram_wordfreq``: the offline counterpart of the shipped ``openwebtext_1gram_lm_sil``.
Re-running with the same inputs and options reuses the folder (``build_info.json`` holds a hash).

Large corpora (``--streamed``, implied by ``--first_pass_ngrams N``; ``ngram/streamed_build.py``): sorted on-disk
counts and estimation over arrays (the same values as the in-memory estimators) in bounded memory; the full LM
becomes ``ngram_store/`` (memory-mapped) and G/TLG are built from a first pass pruned to N n-grams. A killed
build re-run with the same inputs resumes from its scratch folder (``--work_dir``):

    python language_model/build_lm.py --corpus big.txt.gz --order 4 --first_pass_ngrams 300000 --out lm_dir
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from language_model.build_inputs import BuildError, check_inputs, input_hash, read_word_list, up_to_date
from language_model.graph.lexicon import cmu_words, lexicon_for_words
from language_model.graph.tlg import build_lm_dir, check_lexicon
from language_model.ngram.arpa import write_arpa
from language_model.ngram.corpus import (
    DecodeStats,
    check_encoding,
    iter_lines,
    normalized_sentences,
)
from language_model.ngram.train import write_arpa_katz, write_arpa_kn
from language_model.ngram.unigram import DEFAULT_EOS_PROB, wordfreq_unigram, wordfreq_vocabulary
from nejm_b2txt_utils.atomic_io import atomic_open, atomic_write_json
from nejm_b2txt_utils.cli_errors import EXIT_INTERRUPTED, print_bad_input
from nejm_b2txt_utils.memory import peak_rss_mb

log = logging.getLogger("build_lm")

DEFAULT_UNIGRAM_DIR = (
    Path(__file__).resolve().parent / "pretrained_language_models" / "openwebtext_1gram_lm_sil"
)
VOCAB_MODES = ("cmu+corpus", "corpus", "cmu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags (a bad one: the parser's error, exit 2).

    Args:
        argv: the flags (default ``sys.argv[1:]``).

    Returns:
        The namespace (``--out`` defaulted for ``--unigram_wordfreq``).
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to build")
    src.add_argument("--corpus", nargs="+", metavar="FILE", help="training text files (.gz ok; '-' = stdin)")
    src.add_argument("--unigram_wordfreq", action="store_true", help="build the wordfreq 1-gram instead")
    src.add_argument("--out", type=Path, help=f"output LM folder (unigram default: {DEFAULT_UNIGRAM_DIR})")
    lm = p.add_argument_group("n-gram estimation")
    lm.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    lm.add_argument("--smoothing", choices=("katz", "kn"), default="katz",
                    help="katz: SRILM's default Good-Turing/Katz (the original's); kn: modified Kneser-Ney")  # fmt: skip
    lm.add_argument("--min_count", type=int, nargs="+", metavar="N",
                    help="count cut-off per order, a shorter list repeats its last value "
                         "(default: keep every n-gram, as the recipe's -gt1min 0 -gtNmin 1)")  # fmt: skip
    lm.add_argument(
        "--prune", type=float, default=0.0, help="relative-entropy pruning threshold (SRILM -prune)"
    )
    lm.add_argument(
        "--keep_unpruned", action="store_true", help="also write lm_no_prune.arpa / G_no_prune.fst"
    )
    big = p.add_argument_group("large corpora (ngram/streamed_build.py)")
    big.add_argument("--streamed", action="store_true",
                     help="sorted on-disk counts and vectorised estimation (bounded memory, resumable: a re-run "
                          "skips finished stages); the full LM is also written as ngram_store/")
    big.add_argument("--first_pass_ngrams", type=int, default=0, metavar="N",
                     help="prune the first-pass LM (G, TLG) to at most N n-grams by relative entropy "
                          "(implies --streamed; the store keeps the full LM)")
    big.add_argument("--chunk_tokens", type=int, default=4_000_000, help="tokens per counting chunk (--streamed)")
    big.add_argument("--work_dir", type=Path,
                     help="scratch folder kept until the build succeeds (--streamed; default .OUT.build beside OUT)")
    mix = p.add_argument_group("mixing (corpus mode)")
    mix.add_argument("--mix_wordfreq", action="store_true",
                     help="interpolate the n-gram with the wordfreq 1-gram over the same vocabulary (one ARPA, "
                          "language_model/ngram/mix.py), so words the corpus never saw keep a realistic probability")
    mix.add_argument("--mix_weight", type=float, default=0.0,
                     help="weight of the corpus n-gram in the mixture, in (0, 1) (default 0: chosen on the "
                          "held-out sentences by perplexity)")
    mix.add_argument("--mix_dev", type=Path,
                     help="held-out sentences for the mixture weight (default: every 10th corpus sentence, "
                          "left out of the n-gram's estimation)")
    voc = p.add_argument_group("vocabulary and text")
    voc.add_argument("--vocab", choices=VOCAB_MODES, default="cmu+corpus",
                     help="CMU dictionary words and/or corpus words (default cmu+corpus)")  # fmt: skip
    voc.add_argument(
        "--vocab_size", type=int, help="keep only the N most frequent corpus words (others -> <unk>)"
    )
    voc.add_argument("--vocab_file", type=Path, help="explicit word list, one per line (overrides --vocab)")
    voc.add_argument("--no_unk", action="store_true",
                     help="drop sentences with out-of-vocabulary words instead of mapping them to <unk>")  # fmt: skip
    voc.add_argument(
        "--no_number_words", action="store_true", help="delete numbers as the original (no words)"
    )
    voc.add_argument("--encoding", default="utf-8",
                     help="text encoding of the corpus files (default utf-8; e.g. latin-1, cp1252): lines that "
                          "are not valid in it are skipped with a warning that counts them")  # fmt: skip
    uni = p.add_argument_group("wordfreq 1-gram")
    uni.add_argument("--top_words", type=int, default=0,
                     help="add the N most frequent wordfreq words outside the CMU dictionary (G2P)")  # fmt: skip
    uni.add_argument("--eos_prob", type=float, default=DEFAULT_EOS_PROB, help="p(</s>) of the 1-gram")
    graph = p.add_argument_group("graph")
    graph.add_argument("--sil_prob", type=float, default=0.5, help="optional-silence probability in L (0.5)")
    graph.add_argument("--keep_intermediate", action="store_true", help="also write T.fst, L.fst, LG.fst")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = p.parse_args(argv)

    if bool(args.corpus) == args.unigram_wordfreq:
        p.error("give either --corpus FILE... or --unigram_wordfreq")
    if args.unigram_wordfreq and args.out is None:
        args.out = DEFAULT_UNIGRAM_DIR
    if args.out is None:
        p.error("--out DIR is required with --corpus")
    if args.order < 1:
        p.error(f"--order must be >= 1, got {args.order}")
    if args.min_count and any(c < 0 for c in args.min_count):
        p.error(f"--min_count values must be >= 0, got {args.min_count}")
    if args.prune < 0:
        p.error(f"--prune must be >= 0, got {args.prune}")
    if args.mix_weight and not 0.0 < args.mix_weight < 1.0:
        p.error(f"--mix_weight must be in (0, 1) (or 0: chosen on held-out sentences), got {args.mix_weight}")
    args.streamed = args.streamed or args.first_pass_ngrams > 0
    if args.first_pass_ngrams < 0 or args.chunk_tokens < 1:
        p.error("--first_pass_ngrams must be >= 0 and --chunk_tokens >= 1")
    if args.streamed and (args.mix_wordfreq or args.unigram_wordfreq):
        p.error("--streamed/--first_pass_ngrams build a corpus n-gram; mixing and the wordfreq 1-gram are not streamed")
    if args.first_pass_ngrams and args.prune:
        p.error("give either --prune THRESHOLD or --first_pass_ngrams N")
    if (args.mix_weight or args.mix_dev) and not args.mix_wordfreq:
        p.error("--mix_weight/--mix_dev need --mix_wordfreq")
    if not 0.0 <= args.sil_prob < 1.0:
        p.error(f"--sil_prob must be in [0, 1), got {args.sil_prob}")
    for path in [*(args.corpus or []), *([args.vocab_file] if args.vocab_file else []),
                 *([args.mix_dev] if args.mix_dev else [])]:
        if str(path) != "-" and (not Path(path).exists() or Path(path).is_dir()):
            p.error(f"{path}: a folder; expected a text file" if Path(path).is_dir() else f"file not found: {path}")
    try:
        args.encoding = check_encoding(args.encoding)
    except ValueError as exc:
        p.error(f"--encoding: {exc}")
    return args


def choose_vocabulary(args: argparse.Namespace, word_counts: Counter,
                      vocab_words: list[str] | None = None) -> list[str]:
    """The words the LM may output (before dropping words without a pronunciation).

    Args:
        args: the flags (``--vocab``, ``--vocab_size``, ``--vocab_file``).
        word_counts: corpus word counts.
        vocab_words: the ``--vocab_file`` words already read (:func:`check_inputs`).

    Returns:
        The sorted vocabulary.
    """
    if vocab_words is not None:
        return vocab_words
    if args.vocab_file:
        return read_word_list(args.vocab_file)
    vocab: set[str] = set()
    if args.vocab != "cmu":
        ranked = [w for w, _ in word_counts.most_common(args.vocab_size)]
        vocab.update(ranked)
    if args.vocab != "corpus":
        vocab.update(cmu_words())
    return sorted(vocab)


def _stream_lines(path: Path, vocab: set[str] | None, held_out_every: int = 0) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if held_out_every and i % held_out_every == held_out_every - 1:
                continue
            if vocab is None or all(w in vocab for w in line.split()):
                yield line


#: Without ``--mix_dev``, every this-many-th corpus sentence is held out for the mixture weight.
HELD_OUT_EVERY = 10


def mix_with_wordfreq(args: argparse.Namespace, lm, lexicon: dict, normalized: Path, arpa: Path,
                      unpruned: Path | None) -> dict:
    """Replace the estimated ARPA(s) by their mixture with the wordfreq 1-gram (``--mix_wordfreq``).

    Args:
        args: the flags (``--mix_weight``, ``--mix_dev``, ``--eos_prob``).
        lm: the estimated n-gram (:class:`~language_model.ngram.arpa.BackoffLM`).
        lexicon: the vocabulary's lexicon.
        normalized: the normalised corpus (its held-out lines are the default dev set).
        arpa, unpruned: the ARPA files to overwrite with the mixture.

    Returns:
        ``{"mix_weight": ..., "mix_dev_sentences": ..., "mix_dev_perplexity": {...}}`` for build_info.json.

    Raises:
        BuildError: no held-out sentence to choose the weight on.
    """
    from language_model.ngram.arpa import read_arpa
    from language_model.ngram.mix import best_mix_weight, interpolate

    uni = wordfreq_unigram(lexicon, eos_prob=args.eos_prob)
    stats: dict = {}
    weight = args.mix_weight
    if not weight:
        if args.mix_dev:
            dev = list(normalized_sentences(iter_lines([args.mix_dev], encoding=args.encoding),
                                            number_words=not args.no_number_words))
        else:
            with open(normalized, encoding="utf-8") as f:
                dev = [ln.strip() for i, ln in enumerate(f) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
        if not dev:
            raise BuildError("--mix_wordfreq: no held-out sentence to choose the weight on (give --mix_weight)")
        weight, ppl = best_mix_weight(lm, uni, dev)
        stats.update(mix_dev_sentences=len(dev), mix_dev_perplexity={str(k): round(v, 2) for k, v in ppl.items()})
    stats["mix_weight"] = weight
    write_arpa(interpolate(lm, uni, weight), arpa)
    if unpruned is not None and unpruned != arpa:
        write_arpa(interpolate(read_arpa(unpruned), uni, weight), unpruned)
    log.info("mixed the n-gram with the wordfreq 1-gram: weight %.3g", weight)
    return stats


def normalise_corpus(args: argparse.Namespace, work: Path) -> tuple[Path, Counter, int, int]:
    """Normalise the corpus into ``work/corpus.txt`` (reused from ``work/corpus.json`` in a resumed build).

    Args:
        args: the flags (``--corpus``, ``--encoding``, ``--no_number_words``).
        work: the scratch folder.

    Returns:
        ``(normalised corpus, word counts, sentences, undecodable lines)``.

    Raises:
        BuildError: no usable sentence.
    """
    normalized, done = work / "corpus.txt", work / "corpus.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return normalized, Counter(info["word_counts"]), info["sentences"], info["undecodable_lines"]
    word_counts: Counter = Counter()
    n_sentences = 0
    decoding = DecodeStats()
    with atomic_open(normalized) as f, tqdm(desc="normalising", unit=" sent", mininterval=2.0) as bar:
        lines = iter_lines(args.corpus, encoding=args.encoding, stats=decoding)
        sentences = normalized_sentences(lines, number_words=not args.no_number_words)
        while batch := list(itertools.islice(sentences, 10_000)):  # one write and one count per batch
            text = "\n".join(batch) + "\n"
            f.write(text)
            word_counts.update(text.split())
            n_sentences += len(batch)
            bar.update(len(batch))
    if not word_counts:
        raise BuildError(f"corpus {' '.join(map(str, args.corpus))}: no usable sentence after normalisation")
    log.info("corpus: %d sentences, %d words, %d distinct", n_sentences, sum(word_counts.values()), len(word_counts))
    if args.streamed:
        atomic_write_json(done, {"sentences": n_sentences, "undecodable_lines": decoding.undecodable_lines,
                                 "word_counts": word_counts}, indent=None)  # fmt: skip
    return normalized, word_counts, n_sentences, decoding.undecodable_lines


def build_streamed_lm(args: argparse.Namespace, work: Path, normalized: Path, lexicon: dict,
                      stats: dict) -> tuple[dict, dict[str, list[str]], Path, Path | None]:
    """``--streamed``: the full LM as ``ngram_store/`` + the (pruned) first-pass ARPA (``ngram/streamed_build.py``).

    Args:
        args: the flags.
        work: the (persistent) scratch folder.
        normalized: the normalised corpus.
        lexicon: the vocabulary's lexicon.
        stats: corpus statistics so far.

    Returns:
        As :func:`build_from_corpus`; ``stats["store"]`` is the store folder to publish with the graph.
    """
    from language_model.ngram.streamed_build import StreamedOptions, build_streamed

    opts = StreamedOptions(order=args.order, smoothing=args.smoothing, min_counts=args.min_count, prune=args.prune,
                           first_pass_ngrams=args.first_pass_ngrams, keep_unpruned=args.keep_unpruned,
                           drop_oov_sentences=args.no_unk, chunk_tokens=args.chunk_tokens)  # fmt: skip
    result = build_streamed(normalized, set(lexicon), work, opts)
    stats = {**stats, "vocabulary": len(lexicon), **result["stats"], "store": str(result["store"])}
    return stats, lexicon, result["arpa"], result["unpruned_arpa"]


def build_from_corpus(
    args: argparse.Namespace, work: Path, vocab_words: list[str] | None = None
) -> tuple[dict, dict[str, list[str]], Path, Path | None]:
    """Normalise, choose the vocabulary, estimate the ARPA(s) in ``work``.

    Args:
        args: the flags.
        work: a scratch folder.
        vocab_words: the checked ``--vocab_file`` words (:func:`check_inputs`), if any.

    Returns:
        ``(stats, lexicon, arpa path, unpruned arpa path or None)``.

    Raises:
        BuildError: no usable sentence, or an empty vocabulary.
    """
    normalized, word_counts, n_sentences, undecodable = normalise_corpus(args, work)
    lexicon = lexicon_for_words(choose_vocabulary(args, word_counts, vocab_words))
    if not lexicon:
        raise BuildError("vocabulary is empty: no word has a pronunciation")
    try:
        lexicon = check_lexicon(lexicon)  # what build_lm_dir checks, before the estimation rather than after
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    vocab = set(lexicon)
    oov = sum(c for w, c in word_counts.items() if w not in vocab)
    del word_counts
    if args.streamed:
        return build_streamed_lm(args, work, normalized, lexicon, {"sentences": n_sentences,
                                 "undecodable_lines": undecodable, "oov_tokens": oov})  # fmt: skip
    arpa = work / "lm.arpa"
    unpruned = work / "lm_no_prune.arpa" if args.keep_unpruned and args.prune > 0 else None
    train = write_arpa_kn if args.smoothing == "kn" else write_arpa_katz
    held_out = HELD_OUT_EVERY if args.mix_wordfreq and not args.mix_weight and not args.mix_dev else 0
    lm = train(
        _stream_lines(normalized, vocab if args.no_unk else None, held_out),
        args.order,
        arpa,
        vocab=vocab,
        min_counts=args.min_count,
        prune=args.prune,
        unpruned_path=unpruned,
        progress=True,
    )
    if args.keep_unpruned and unpruned is None:
        unpruned = arpa  # nothing was pruned: the "unpruned" G is G
    stats = {
        "sentences": n_sentences,
        "undecodable_lines": undecodable,
        "oov_tokens": oov,
        "vocabulary": len(lexicon),
        "ngrams": lm.num_ngrams(),
    }
    if args.mix_wordfreq:
        stats.update(mix_with_wordfreq(args, lm, lexicon, normalized, arpa, unpruned))
    return stats, lexicon, arpa, unpruned


def build_unigram(args: argparse.Namespace, work: Path) -> tuple[dict, dict[str, list[str]], Path]:
    """The wordfreq 1-gram ARPA in ``work``.

    Args:
        args: the flags (``--top_words``, ``--eos_prob``).
        work: a scratch folder.

    Returns:
        ``(stats, lexicon, arpa path)``.
    """
    lexicon = lexicon_for_words(wordfreq_vocabulary(args.top_words))
    lm = wordfreq_unigram(lexicon, eos_prob=args.eos_prob)
    arpa = write_arpa(lm, work / "lm.arpa")
    return {"vocabulary": len(lexicon), "ngrams": lm.num_ngrams()}, lexicon, arpa


@contextmanager
def _scratch_folder(args: argparse.Namespace, out: Path, digest: str | None) -> Iterator[Path]:
    """A temporary folder, or with ``--streamed`` a kept one (``--work_dir``) that a re-run with the same inputs
    resumes from; it is removed once the LM folder is published."""
    if not args.streamed:
        with tempfile.TemporaryDirectory(prefix=".build_lm-", dir=out.parent) as tmp:
            yield Path(tmp)
        return
    work = (args.work_dir or out.parent / f".{out.name}.build").absolute()
    marker = work / "inputs.json"
    identity = {"input_hash": digest, "chunk_tokens": args.chunk_tokens}  # chunks are the resumed units
    if work.exists() and (digest is None or not marker.is_file() or json.loads(marker.read_text()) != identity):
        log.info("%s holds another build's scratch files: starting afresh", work)
        shutil.rmtree(work)
    if marker.is_file():
        log.info("resuming the build from %s", work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, identity)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> Path:
    """Build (or reuse) the LM folder ``args.out``.

    Args:
        args: the flags.

    Returns:
        The folder's absolute path.

    Raises:
        BuildError, ValueError, OSError: a user-facing build problem.
    """
    out = args.out.absolute()
    vocab_words = check_inputs(args) if args.corpus else None
    digest = input_hash(args)
    if not args.force and up_to_date(out, digest):
        log.info("%s is up to date (same inputs and options); use --force to rebuild", out)
        return out
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with _scratch_folder(args, out, digest) as work:
        unpruned = None
        if args.unigram_wordfreq:
            stats, lexicon, arpa = build_unigram(args, work)
        else:
            stats, lexicon, arpa, unpruned = build_from_corpus(args, work, vocab_words)
        t_arpa = time.perf_counter() - t0
        info: dict = {}

        def write_build_info(folder: Path) -> None:
            """build_info.json goes into the finished folder before it is renamed into place: an interrupted
            build leaves the previous folder (or none), never a new one without its build_info.json."""
            info.update({
                "input_hash": digest,
                "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                **stats,
                "arpa_seconds": round(t_arpa, 2),
                "total_seconds": round(time.perf_counter() - t0, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "tlg_bytes": (folder / "TLG.fst").stat().st_size,
            })  # fmt: skip
            if "store" in stats:  # --streamed: the full LM goes into the folder with the graph
                os.replace(stats["store"], folder / "ngram_store")
                info["store"] = "ngram_store"
            atomic_write_json(folder / "build_info.json", info)

        build_lm_dir(lexicon, arpa, out, sil_prob=args.sil_prob, unpruned_arpa_path=unpruned,
                     keep_intermediate=args.keep_intermediate, before_publish=write_build_info)  # fmt: skip
    log.info(  # the build_info's stats: the store's path is the published one, not the removed scratch folder
        "built %s in %.1f s (peak RSS %.0f MB): %s", out, info["total_seconds"], info["peak_rss_mb"],
        {**stats, **({"store": str(out / "ngram_store")} if "store" in stats else {})}
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """``build_lm.py``: log the options, build, report one line on failure.

    Args:
        argv: the flags (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on bad input (``error: ...``, one line on stderr), 1 on another build error, 130 on
        Ctrl-C (one line: a re-run resumes the streamed build's finished stages).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    log.info("options: %s", {k: str(v) for k, v in vars(args).items()})
    try:
        run(args)
    except BuildError as exc:
        return print_bad_input(exc)
    except (ValueError, OSError) as exc:
        log.debug("failure", exc_info=True)
        print(f"build_lm.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build_lm.py: interrupted (Ctrl-C); run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
