"""The scalable n-gram build (``build_lm.py --streamed``): normalised corpus -> full LM store + first-pass ARPA.

Stages, each resumable (a killed build re-run with the same inputs skips what is finished; the scratch folder
``work`` is kept until the LM folder is published):

1. **count** (:func:`~language_model.ngram.sorted_counts.count_corpus`): chunks -> sorted runs -> merged counts;
2. **estimate** (:mod:`~language_model.ngram.estimate_arrays`): Katz/Good-Turing (default, the original's) or
   modified Kneser-Ney over the sorted arrays; saved as ``.npy`` files (``work/lm``);
3. **store**: the full, unpruned model as the memory-mapped n-gram store (``ngram_store/``, written by
   ``store.write_store``);
4. **first pass** (:mod:`~language_model.ngram.prune_arrays`): pruned to ``first_pass_ngrams`` n-grams (or at the
   ``prune`` threshold, or not at all) and written as the ARPA that G and TLG are compiled from.

Memory: one order's arrays at a time during counting/merging (bounded by the chunk and merge block sizes); the
whole model's arrays during estimation and pruning (~40 bytes per n-gram: key, count, probability, bow).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from language_model.ngram.array_lm import ArrayLM, parent_index, write_arpa_arrays
from language_model.ngram.estimate_arrays import estimate_katz_arrays, estimate_kn_arrays
from language_model.ngram.prune_arrays import cap_backoffs, prune_to_size, prune_to_threshold
from language_model.ngram.sorted_counts import DEFAULT_CHUNK_TOKENS, count_corpus, last_word
from language_model.ngram.store import HEADER
from language_model.ngram.store_writer import write_store
from nejm_b2txt_utils.atomic_io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

STORE_DIR = "ngram_store"


@dataclass
class StreamedOptions:
    """What to build (``build_lm.py``'s flags)."""

    order: int = 4
    smoothing: str = "katz"
    min_counts: Sequence[int] | None = None
    prune: float = 0.0
    first_pass_ngrams: int = 0
    keep_unpruned: bool = False
    drop_oov_sentences: bool = False
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    progress: bool = True


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        yield from f


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- saving the estimated arrays
def save_array_lm(lm: ArrayLM, folder: Path) -> None:
    """Save a model's arrays (``.npy``) and, last, ``lm.json`` (the marker).

    Args:
        lm: the model.
        folder: created if missing.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for m in range(1, lm.order + 1):
        arrays = {"keys": lm.keys[m - 1], "probs": lm.probs[m - 1]}
        if m < lm.order:
            arrays.update(bows=lm.bows[m - 1], has_bow=lm.has_bow[m - 1])
        for name, arr in arrays.items():
            with atomic_path(folder / f"{m}.{name}.npy", suffix=".npy") as tmp:
                np.save(tmp, np.asarray(arr))
    atomic_write_json(folder / "lm.json", {"order": lm.order, "words": lm.words, "counts": lm.num_ngrams()})


def load_array_lm(folder: Path) -> ArrayLM | None:
    """A model saved by :func:`save_array_lm` (memory-mapped), or ``None`` if unfinished.

    Args:
        folder: the folder.

    Returns:
        The model or ``None``.
    """
    if not (folder / "lm.json").is_file():
        return None
    meta = json.loads((folder / "lm.json").read_text())
    lm = ArrayLM(order=meta["order"], words=meta["words"])
    for m in range(1, lm.order + 1):
        lm.keys.append(np.load(folder / f"{m}.keys.npy", mmap_mode="r"))
        lm.probs.append(np.load(folder / f"{m}.probs.npy", mmap_mode="r"))
        if m < lm.order:
            lm.bows.append(np.load(folder / f"{m}.bows.npy", mmap_mode="r"))
            lm.has_bow.append(np.load(folder / f"{m}.has_bow.npy", mmap_mode="r"))
    return lm


# --------------------------------------------------------------------------- the store
def _log10(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(values > 0.0, np.log10(np.maximum(values, 1e-300)), -99.0).astype(np.float32)


def store_orders(lm: ArrayLM) -> Iterator[dict[str, np.ndarray]]:
    """The model in the store's per-order layout (one order at a time).

    Args:
        lm: the model (sorted keys: entries are grouped by parent in parent order, by word within a parent).

    Returns:
        An iterator of ``{"word", "logp"[, "bow", "child"]}`` for orders 1..N.
    """
    for m in range(1, lm.order + 1):
        keys = lm.keys[m - 1]
        arrays = {"word": last_word(keys, m), "logp": _log10(np.asarray(lm.probs[m - 1]))}
        if m < lm.order:
            bows = np.where(np.asarray(lm.has_bow[m - 1]), np.asarray(lm.bows[m - 1]), 1.0)
            arrays["bow"] = _log10(bows)
            children = np.bincount(parent_index(lm, m + 1), minlength=len(keys))
            arrays["child"] = np.concatenate([[0], np.cumsum(children)]).astype(np.int64)
        yield arrays


# --------------------------------------------------------------------------- the build
def build_streamed(corpus: Path, vocab: set[str], work: Path, opts: StreamedOptions) -> dict:
    """Run (or resume) the stages of the module docstring in ``work``.

    Args:
        corpus: the normalised corpus (one sentence per line).
        vocab: the LM's words (closed vocabulary; other words -> ``<unk>``).
        work: the scratch folder (kept between runs).
        opts: the options.

    Returns:
        ``{"arpa": first-pass ARPA path, "unpruned_arpa": path or None, "store": store folder, "stats": {...}}``
        (stats: token/sentence counts, n-grams per order of the full and the first-pass LM, the pruning
        threshold, seconds per stage, the store's bytes).

    Raises:
        ValueError: an empty corpus, cut-offs that decrease, or an unknown smoothing.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    words, tables, totals = count_corpus(_lines(corpus), opts.order, vocab, work, chunk_tokens=opts.chunk_tokens,
                                         drop_oov_sentences=opts.drop_oov_sentences, progress=opts.progress)
    seconds["count"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lm = load_array_lm(work / "lm")
    if lm is None:
        if opts.smoothing == "kn":
            lm = estimate_kn_arrays(tables, words, opts.min_counts)
        elif opts.smoothing == "katz":
            lm = estimate_katz_arrays(tables, words, opts.min_counts)
        else:
            raise ValueError(f"unknown smoothing {opts.smoothing!r} (katz or kn)")
        save_array_lm(lm, work / "lm")
        lm = load_array_lm(work / "lm")  # memory-mapped from here on
    seconds["estimate"] = time.perf_counter() - t0
    log.info("estimated %s: n-grams per order %s", opts.smoothing, lm.num_ngrams())

    t0 = time.perf_counter()
    store = work / STORE_DIR
    if not (store / HEADER).is_file():
        write_store(store, lm.words, store_orders(lm),
                    source=f"build_lm.py --streamed: {opts.smoothing} {opts.order}-gram, unpruned")  # fmt: skip
    seconds["store"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    arpa, done = work / "lm.arpa", work / "lm.arpa.json"
    threshold = 0.0
    if done.is_file():
        finished = json.loads(done.read_text())
        first_counts, threshold, capped = finished["counts"], finished["threshold"], finished.get("backoffs_capped", 0)
    else:
        if opts.first_pass_ngrams:
            first, threshold = prune_to_size(lm, opts.first_pass_ngrams)
        elif opts.prune > 0.0:
            first, threshold = prune_to_threshold(lm, opts.prune), opts.prune
        else:
            first = lm
        capped = 0
        if first is not lm:  # a first pass (the store keeps the full LM): back-off must never pay in its G
            first, capped = cap_backoffs(first)
            log.info("first pass: %d backoff weights above 1 capped at 1 (the exact pass uses the store)", capped)
        write_arpa_arrays(first, arpa)
        first_counts = first.num_ngrams()
        atomic_write_json(done, {"counts": first_counts, "threshold": threshold, "backoffs_capped": capped})
    unpruned = None
    if opts.keep_unpruned:
        unpruned = arpa
        if first_counts != lm.num_ngrams():
            unpruned = work / "lm_no_prune.arpa"
            if not (work / "lm_no_prune.arpa.json").is_file():
                write_arpa_arrays(lm, unpruned)
                atomic_write_json(work / "lm_no_prune.arpa.json", {"counts": lm.num_ngrams()})
    seconds["first_pass"] = time.perf_counter() - t0
    stats = {**totals, "vocabulary_ids": len(words), "ngrams_full": lm.num_ngrams(), "ngrams": first_counts,
             "prune_threshold": threshold, "first_pass_backoffs_capped": capped,
             "store_bytes": _disk_bytes(store),
             "stage_seconds": {k: round(v, 1) for k, v in seconds.items()}}  # fmt: skip
    return {"arpa": arpa, "unpruned_arpa": unpruned, "store": store, "stats": stats}
