"""N-gram counting at scale: corpus chunks -> sorted on-disk runs -> one merged, sorted count table per order.

The vectorised, bounded-memory counterpart of ``counts.count_ngrams`` (same semantics: every sentence is
``<s> w1 .. wn </s>``; n-grams of orders 1..N inside a sentence are counted; out-of-vocabulary words map to
``<unk>``), for corpora far larger than RAM:

1. **Word ids.** The vocabulary is closed and known before counting: id 0 ``<s>``, 1 ``</s>``, 2 ``<unk>``,
   then the sorted words (``counts.count_ngrams``'s ids for a closed vocabulary). A chunk of sentences becomes
   one ``uint32`` id array (``dict.get`` mapped in C over the chunk's tokens, no per-token Python loop).
2. **Keys.** An n-gram of order m is m big-endian ``uint32`` ids viewed as one ``S{4m}`` byte string:
   bytewise order of these keys is the lexicographic order of the id tuples, so one ``np.sort``/``np.unique``
   sorts n-grams of any vocabulary size (no 64-bit packing limit) and a parent's children are contiguous.
3. **Runs.** Each chunk's n-grams of each order are counted (``np.unique``) into a sorted run on disk.
4. **Merge.** The runs of an order are merged block by block (a vectorised k-way merge: from every run take
   the keys up to the smallest block-end key, sort, sum equal keys), so memory is bounded by the block size.

Every chunk and every merged order is written under a temporary name and renamed; a ``.json`` beside it marks
it finished, so a killed build re-run skips the chunks and orders it already has.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
from tqdm import tqdm

from language_model.ngram.counts import BOS, BOS_ID, EOS, UNK, UNK_ID
from nejm_b2txt_utils.atomic_io import atomic_write_json

log = logging.getLogger(__name__)

#: Tokens per counting chunk (~0.5 GB of Python strings + id/key arrays per chunk).
DEFAULT_CHUNK_TOKENS = 4_000_000
#: Entries taken from every run per merge step.
MERGE_BLOCK = 1 << 20
ID_DTYPE = np.dtype(">u4")  # big-endian: bytewise key order == numeric id order


# --------------------------------------------------------------------------- keys
def key_dtype(order: int) -> np.dtype:
    """The byte-string dtype of order-``order`` keys.

    Args:
        order: n-gram order m.

    Returns:
        ``S{4m}``.
    """
    return np.dtype(f"S{4 * order}")


def ids_to_keys(ids: np.ndarray) -> np.ndarray:
    """Id tuples -> sortable keys.

    Args:
        ids: [n, m] word ids (any integer dtype).

    Returns:
        [n] ``S{4m}`` keys (bytewise order = lexicographic id order).
    """
    m = ids.shape[1]
    return np.ascontiguousarray(ids, dtype=ID_DTYPE).view(key_dtype(m)).reshape(-1)


def keys_to_ids(keys: np.ndarray, order: int) -> np.ndarray:
    """Keys -> id tuples.

    Args:
        keys: [n] ``S{4m}`` keys.
        order: m.

    Returns:
        [n, m] ``uint32`` ids (native byte order).
    """
    raw = np.ascontiguousarray(keys).view(ID_DTYPE).reshape(-1, order)  # [n, m]
    return raw.astype(np.uint32)


def key_slice(keys: np.ndarray, order: int, start: int, stop: int) -> np.ndarray:
    """Sub-n-grams: words ``start:stop`` of every key (e.g. the context ``0:m-1``, the suffix ``1:m``).

    Args:
        keys: [n] keys of order ``order``.
        order: m.
        start, stop: word positions, ``0 <= start < stop <= m``.

    Returns:
        [n] keys of order ``stop - start``.
    """
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(-1, 4 * order)  # [n, 4m] bytes
    return np.ascontiguousarray(raw[:, 4 * start : 4 * stop]).view(key_dtype(stop - start)).reshape(-1)


def last_word(keys: np.ndarray, order: int) -> np.ndarray:
    """The last word id of every key.

    Args:
        keys: [n] keys of order ``order``.
        order: m.

    Returns:
        [n] ``uint32`` ids.
    """
    return key_slice(keys, order, order - 1, order).view(ID_DTYPE).astype(np.uint32)


def codes_fit(vocab_size: int, order: int) -> bool:
    """Whether order-m n-grams over V words fit one uint64 code (``V**m <= 2**64``).

    Args:
        vocab_size: V.
        order: m.

    Returns:
        True if :func:`ids_to_codes` applies.
    """
    return vocab_size**order <= 2**64


def ids_to_codes(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Id tuples -> mixed-radix uint64 codes ``((id0 V + id1) V + ...)``: the same order as the keys, but sorted
    and searched at machine-integer speed (the byte-string keys are the fallback when ``V**m > 2**64``).

    Args:
        ids: [n, m] ids (< V).
        vocab_size: V (:func:`codes_fit` must hold).

    Returns:
        [n] uint64 codes.
    """
    base = np.uint64(vocab_size)
    codes = ids[:, 0].astype(np.uint64)
    for j in range(1, ids.shape[1]):
        codes = codes * base + ids[:, j].astype(np.uint64)
    return codes


def codes_to_ids(codes: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """Inverse of :func:`ids_to_codes`.

    Args:
        codes: [n] uint64 codes.
        order: m.
        vocab_size: V.

    Returns:
        [n, m] uint32 ids.
    """
    base = np.uint64(vocab_size)
    ids = np.empty((len(codes), order), np.uint32)
    rest = codes.copy()
    for j in range(order - 1, -1, -1):
        ids[:, j] = rest % base
        rest //= base
    return ids


# --------------------------------------------------------------------------- vocabulary and chunks
def word_index(vocab: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Ids of a closed vocabulary, as ``counts.count_ngrams`` assigns them.

    Args:
        vocab: the LM's words.

    Returns:
        ``(words, {word: id})``: ``<s>`` 0, ``</s>`` 1, ``<unk>`` 2, then the sorted words.
    """
    words = [BOS, EOS, UNK, *sorted(set(vocab) - {BOS, EOS, UNK})]
    return words, {w: i for i, w in enumerate(words)}


def sentence_ids(lines: Sequence[str], index: dict[str, int], drop_oov_sentences: bool = False) -> np.ndarray:
    """Sentences -> one id array ``<s> w.. </s> <s> w.. </s> ...`` (empty sentences skipped).

    Args:
        lines: sentences (whitespace-separated words).
        index: word -> id (:func:`word_index`); other words become ``<unk>``.
        drop_oov_sentences: leave out sentences with an out-of-vocabulary word instead (``--no_unk``).

    Returns:
        [T] ``uint32`` ids.
    """
    lines = [ln for ln in lines if not ln.isspace() and ln]
    if not lines:
        return np.zeros(0, np.uint32)
    tokens = f"{BOS} {f' {EOS} {BOS} '.join(lines)} {EOS}".split()
    ids = np.fromiter(map(index.get, tokens, repeat(UNK_ID)), dtype=np.uint32, count=len(tokens))
    del tokens
    if drop_oov_sentences:
        sent = np.cumsum(ids == BOS_ID) - 1  # [T] sentence of every token
        bad = np.zeros(int(sent[-1]) + 1, bool)
        bad[sent[ids == UNK_ID]] = True
        ids = ids[~bad[sent]]
    return ids


def count_chunk(ids: np.ndarray, order: int, vocab_size: int = 2**32) -> tuple[np.ndarray, np.ndarray]:
    """Distinct n-grams of one order inside the sentences of an id array, with counts.

    Args:
        ids: [T] ids from :func:`sentence_ids`.
        order: m.
        vocab_size: V (sorted as uint64 codes when ``V**m <= 2**64``).

    Returns:
        ``(keys [n] S{4m} sorted, counts [n] int64)``.
    """
    t = len(ids)
    if t < order:
        return np.zeros(0, key_dtype(order)), np.zeros(0, np.int64)
    sent = np.cumsum(ids == BOS_ID)  # [T]
    n = t - order + 1
    inside = sent[:n] == sent[order - 1 :]  # [n] window within one sentence
    windows = np.stack([ids[j : n + j][inside] for j in range(order)], axis=1)  # [n', m]
    if codes_fit(vocab_size, order):
        codes, counts = np.unique(ids_to_codes(windows, vocab_size), return_counts=True)
        keys = ids_to_keys(codes_to_ids(codes, order, vocab_size))
    else:
        keys, counts = np.unique(ids_to_keys(windows), return_counts=True)
    return keys, counts.astype(np.int64)


# --------------------------------------------------------------------------- on-disk tables
@dataclass
class CountTable:
    """A sorted (key, count) table on disk: ``<stem>.keys.bin``, ``<stem>.counts.bin``, ``<stem>.json``."""

    stem: Path
    order: int
    size: int

    def keys(self) -> np.ndarray:
        """Returns: [size] keys (memory-mapped)."""
        return _memmap(self.stem.with_suffix(".keys.bin"), key_dtype(self.order), self.size)

    def counts(self) -> np.ndarray:
        """Returns: [size] int64 counts (memory-mapped)."""
        return _memmap(self.stem.with_suffix(".counts.bin"), np.dtype(np.int64), self.size)


def _memmap(path: Path, dtype: np.dtype, size: int) -> np.ndarray:
    if size == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(size,))


class _TableWriter:
    """Appends sorted blocks to a table; :meth:`close` renames the files and writes the marker last."""

    def __init__(self, stem: Path, order: int):
        self.stem, self.order, self.size = stem, order, 0
        stem.parent.mkdir(parents=True, exist_ok=True)
        self._files = {s: open(stem.with_suffix(f".{s}.bin.tmp"), "wb") for s in ("keys", "counts")}

    def append(self, keys: np.ndarray, counts: np.ndarray) -> None:
        keys.tofile(self._files["keys"])
        counts.astype(np.int64).tofile(self._files["counts"])
        self.size += len(keys)

    def close(self, extra: dict | None = None) -> CountTable:
        for name, f in self._files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(f.name, self.stem.with_suffix(f".{name}.bin"))
        atomic_write_json(self.stem.with_suffix(".json"), {"order": self.order, "size": self.size, **(extra or {})})
        return CountTable(self.stem, self.order, self.size)


def open_table(stem: Path) -> CountTable | None:
    """A finished table, or ``None`` if its marker is missing (not written, or interrupted).

    Args:
        stem: the table's path without suffix.

    Returns:
        The table or ``None``.
    """
    marker = stem.with_suffix(".json")
    if not marker.is_file():
        return None
    meta = json.loads(marker.read_text())
    return CountTable(stem, meta["order"], meta["size"])


# --------------------------------------------------------------------------- counting and merging
def _chunks(lines: Iterable[str], chunk_tokens: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += line.count(" ") + 1
        if size >= chunk_tokens:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def count_runs(lines: Iterable[str], order: int, index: dict[str, int], work: Path,
               chunk_tokens: int = DEFAULT_CHUNK_TOKENS, drop_oov_sentences: bool = False,
               progress: bool = True) -> tuple[list[list[CountTable]], dict]:
    """Count every chunk of ``lines`` into sorted runs ``work/runs/<m>/<chunk>`` (finished chunks are reused).

    Args:
        lines: the sentences, one per item (read lazily; the same stream on a re-run).
        order: highest order N.
        index: word -> id (:func:`word_index`).
        work: the build's scratch folder.
        chunk_tokens: about this many tokens per chunk.
        drop_oov_sentences: ``--no_unk``.
        progress: tqdm bar (unit: tokens).

    Returns:
        ``(runs, totals)``: ``runs[m-1]`` the order-m runs; totals ``sentences``, ``tokens`` (words without
        ``<s>``/``</s>``) and ``oov_tokens``.
    """
    runs: list[list[CountTable]] = [[] for _ in range(order)]
    totals = {"sentences": 0, "tokens": 0, "oov_tokens": 0}
    bar = tqdm(desc="counting n-grams", unit=" tok", unit_scale=True, disable=not progress, mininterval=2.0)
    for c, chunk in enumerate(_chunks(lines, chunk_tokens)):
        stems = [work / "runs" / str(m) / f"{c:06d}" for m in range(1, order + 1)]
        tables = [open_table(s) for s in stems]
        if all(t is not None for t in tables):
            stats = json.loads(stems[0].with_suffix(".json").read_text())["stats"]
        else:
            ids = sentence_ids(chunk, index, drop_oov_sentences)
            n_sent = int(np.count_nonzero(ids == BOS_ID))
            stats = {"sentences": n_sent, "tokens": len(ids) - 2 * n_sent,
                     "oov_tokens": int(np.count_nonzero(ids == UNK_ID))}  # fmt: skip
            for m in range(order, 0, -1):  # order 1 last: its marker says the whole chunk is done
                keys, counts = count_chunk(ids, m, len(index))
                writer = _TableWriter(stems[m - 1], m)
                writer.append(keys, counts)
                tables[m - 1] = writer.close({"stats": stats})
        for m in range(order):
            runs[m].append(tables[m])
        for k in totals:
            totals[k] += stats[k]
        bar.update(stats["tokens"])
    bar.close()
    return runs, totals


def _sum_equal_keys(keys: np.ndarray, counts: np.ndarray, order: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort keys and sum the counts of equal ones (as uint64 codes when they fit: ~10x faster than bytes)."""
    packed = codes_fit(vocab_size, order)
    values = ids_to_codes(keys_to_ids(keys, order), vocab_size) if packed else keys
    by_value = np.argsort(values, kind="stable")
    values, counts = values[by_value], counts[by_value]
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    values, counts = values[starts], np.add.reduceat(counts, starts) if len(starts) else counts[:0]
    return (ids_to_keys(codes_to_ids(values, order, vocab_size)) if packed else values), counts


def merge_runs(runs: Sequence[CountTable], stem: Path, block: int = MERGE_BLOCK, progress: bool = True,
               vocab_size: int = 2**32) -> CountTable:
    """Merge sorted runs of one order into one sorted table with summed counts (reused if finished).

    Args:
        runs: the order's runs (:func:`count_runs`).
        stem: the merged table's path without suffix.
        block: entries taken from each run per step (memory: about ``len(runs) * block`` keys).
        progress: tqdm bar (unit: n-grams read).
        vocab_size: V (keys are summed as uint64 codes when ``V**m <= 2**64``).

    Returns:
        The merged table.
    """
    done = open_table(stem)
    if done is not None:
        return done
    order = runs[0].order
    writer = _TableWriter(stem, order)
    keys = [r.keys() for r in runs]
    counts = [r.counts() for r in runs]
    pos = [0] * len(runs)
    bar = tqdm(total=sum(r.size for r in runs), desc=f"merging {order}-grams", unit=" ngram", unit_scale=True,
               disable=not progress, mininterval=2.0)  # fmt: skip
    while True:
        live = [i for i in range(len(runs)) if pos[i] < runs[i].size]
        if not live:
            break
        # every key <= the smallest block-end key is complete in this step
        bound = min(keys[i][min(pos[i] + block, runs[i].size) - 1] for i in live)
        ks, cs = [], []
        for i in live:
            end = pos[i] + int(np.searchsorted(keys[i][pos[i] : pos[i] + block], bound, side="right"))
            ks.append(np.asarray(keys[i][pos[i] : end]))
            cs.append(np.asarray(counts[i][pos[i] : end]))
            bar.update(end - pos[i])
            pos[i] = end
        writer.append(*_sum_equal_keys(np.concatenate(ks), np.concatenate(cs), order, vocab_size))
    bar.close()
    return writer.close()


def count_corpus(lines: Iterable[str], order: int, vocab: Iterable[str], work: Path, *,
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS, drop_oov_sentences: bool = False,
                 merge_block: int = MERGE_BLOCK, progress: bool = True) -> tuple[list[str], list[CountTable], dict]:
    """Count a corpus into one sorted table per order under ``work`` (resumable; see the module docstring).

    Args:
        lines: the sentences.
        order: highest order N (>= 1).
        vocab: the closed vocabulary.
        work: the scratch folder (kept between runs to resume).
        chunk_tokens: tokens per chunk.
        drop_oov_sentences: ``--no_unk``.
        merge_block: entries per run per merge step (:func:`merge_runs`).
        progress: tqdm bars.

    Returns:
        ``(words, tables, totals)``: id -> word, ``tables[m-1]`` the order-m counts, the totals of
        :func:`count_runs`.

    Raises:
        ValueError: ``order`` < 1, or no sentence with a word.
    """
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    words, index = word_index(vocab)
    runs, totals = count_runs(lines, order, index, work, chunk_tokens, drop_oov_sentences, progress)
    if totals["tokens"] == 0:
        raise ValueError("corpus is empty: no sentence with at least one word")
    tables = [merge_runs(runs[m], work / "counts" / str(m + 1), merge_block, progress, len(words)) for m in range(order)]
    log.info("counted %d sentences, %d words (%d mapped to <unk>); distinct n-grams per order: %s",
             totals["sentences"], totals["tokens"], totals["oov_tokens"], [t.size for t in tables])  # fmt: skip
    return words, tables, totals
