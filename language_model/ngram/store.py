"""A memory-mapped back-off n-gram store: an ARPA's n-grams as a trie of ``.npy`` arrays, never loaded whole.

The contract is ``STORE_FORMAT`` below (one folder ``ngram_store/`` inside an LM folder): ``vocab.txt``, per
order k ``k.word.npy`` (uint32), ``k.logp.npy`` (float32, log10), ``k.bow.npy`` (float32, k < N) and
``k.child.npy`` (int64 [n_k + 1], k < N: the children of entry i are entries ``child[i]:child[i+1]`` of order
k+1, sorted by word), and ``header.json`` written last. Order-1 entries are indexed by word id.

:class:`~language_model.ngram.store_writer.StoreWriter` / ``write_store`` (``ngram/store_writer.py``) write it (from in-memory or memory-mapped arrays, one order at a
time), :class:`NgramStore` opens it (``np.load(mmap_mode="r")``: pages are read on demand, so start-up costs
the header checks and ``vocab.txt``) and scores whole batches of sentences with one vectorised binary search
per order over the memmaps (:meth:`NgramStore.score_ids`). Scores are the ARPA's (KenLM/SRILM) semantics.

Why a format of our own rather than KenLM's binary: it installs with pip alone (numpy; no C++ build), the
vectorised builder (``ngram/streamed_build.py``) writes it directly, and numpy reads it. Size: 20 bytes per
n-gram of the orders below the highest (word 4, logp 4, bow 4, child offset 8) and 8 for the highest. Measured
(``benchmarks/lm_scale.py``, Katz 3-grams of generated text, a 2-core machine at load 12-14): 1.0M n-grams take
13 MB (12.9 bytes per n-gram), 10.9M take 121 MB (11.6); opening costs the header checks and ``vocab.txt``
(0.23 s / +3.3 MB RSS for 23k words; 0.45 s / +3.6 MB for 28k), and one 100-best of 12-word sentences scores in
31 ms / 36 ms (p50): the arrays are never read whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

FORMAT = "b2txt-ngram-store"
VERSION = 1
LN10 = math.log(10.0)
HEADER = "header.json"
VOCAB = "vocab.txt"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
#: dtype of each per-order array (``bow`` and ``child`` exist for orders below the highest only).
DTYPES = {"word": np.dtype("<u4"), "logp": np.dtype("<f4"), "bow": np.dtype("<f4"), "child": np.dtype("<i8")}
CHUNK = 1 << 22  # elements copied / checked per step (32 MB of int64)
LOGP_ROUNDING = 1e-4  # log10 p above 0 by float rounding (p = c / c of a sure event) is still a probability
_SPOT = 1 << 16  # values spot-checked at the head and tail of each array when a store is opened


class StoreError(ValueError):
    """A store file is missing, truncated, foreign or inconsistent (the message names the file)."""


def array_name(k: int, kind: str) -> str:
    """File name of one array of order ``k`` (``"2.child.npy"``)."""
    return f"{k}.{kind}.npy"


def kinds_of_order(k: int, order: int) -> tuple[str, ...]:
    """The arrays of order ``k`` in an ``order``-gram store (``bow`` and ``child`` below the highest only)."""
    return ("word", "logp", "bow", "child") if k < order else ("word", "logp")


def array_length(kind: str, n: int) -> int:
    return n + 1 if kind == "child" else n


# --------------------------------------------------------------------------- checking
def _read_header(path: Path) -> dict:
    hp = path / HEADER
    if not hp.is_file():
        raise StoreError(f"{hp}: missing; expected the header of a complete n-gram store (written last)")
    try:
        header = json.loads(hp.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"{hp}: not JSON ({e}); expected a {FORMAT} header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StoreError(f"{hp}: format {header.get('format') if isinstance(header, dict) else None!r}, "
                         f"expected {FORMAT!r}")
    if header.get("version") != VERSION:
        raise StoreError(f"{hp}: version {header.get('version')!r}, expected {VERSION}")
    for key in ("order", "counts", "vocab_size", "files"):
        if key not in header:
            raise StoreError(f"{hp}: no {key!r} field")
    if header.get("log_base") != 10:
        raise StoreError(f"{hp}: log_base {header.get('log_base')!r}, expected 10")
    order, counts = header["order"], header["counts"]
    if not (isinstance(order, int) and order >= 1 and isinstance(counts, list) and len(counts) == order):
        raise StoreError(f"{hp}: order {order!r} with counts {counts!r}; expected one count per order")
    if counts[0] != header["vocab_size"]:
        raise StoreError(f"{hp}: {counts[0]} unigrams but vocab_size {header['vocab_size']}; expected equal")
    return header


def open_arrays(path: Path, header: dict) -> dict[tuple[int, str], np.memmap]:
    order, counts, files = header["order"], header["counts"], header["files"]
    arrays = {}
    for k in range(1, order + 1):
        for kind in kinds_of_order(k, order):
            name = array_name(k, kind)
            fp = path / name
            if not fp.is_file():
                raise StoreError(f"{fp}: missing; expected order {k}'s {kind} array")
            size = fp.stat().st_size
            if name in files and files[name] != size:
                raise StoreError(f"{fp}: {size} bytes, expected {files[name]} (truncated or rewritten?)")
            try:
                arr = np.load(fp, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise StoreError(f"{fp}: not a readable .npy file ({e})") from None
            want = array_length(kind, counts[k - 1])
            if arr.dtype != DTYPES[kind] or arr.shape != (want,):
                raise StoreError(f"{fp}: {arr.dtype}[{','.join(map(str, arr.shape))}], expected "
                                 f"{DTYPES[kind]}[{want}] (counts {counts})")
            arrays[(k, kind)] = arr
    return arrays


def _check_values(path: Path, name: str, values: np.ndarray, is_logp: bool) -> None:
    """Finite log10 values (a log10 probability also <= 0); one line naming the file and the entry."""
    bad = ~np.isfinite(values) | ((values > LOGP_ROUNDING) if is_logp else False)
    if bad.any():
        i = int(np.argmax(bad))
        what = "a finite log10 probability <= 0" if is_logp else "a finite log10 backoff"
        raise StoreError(f"{path / name}: entry {i} is {float(values[i])}; expected {what}")


def check_arrays(path: Path, header: dict, arrays: dict, deep: bool) -> None:
    """Child offsets start at 0 and end at the next order's count; the unigram values and the first and last
    ``_SPOT`` values of every higher order are finite (a NaN store scored silently); ``deep`` reads every array."""
    order, counts, vocab_size = header["order"], header["counts"], header["vocab_size"]
    for k in range(1, order):
        child = arrays[(k, "child")]
        if child[0] != 0 or child[-1] != counts[k]:
            raise StoreError(f"{path / array_name(k, 'child')}: offsets run {child[0]}..{child[-1]}, expected "
                             f"0..{counts[k]} (order {k + 1}'s count)")
    for k in range(1, order + 1):
        for field in ("logp", "bow") if k < order else ("logp",):
            values = arrays[(k, field)]
            step = CHUNK if deep or k == 1 else _SPOT
            blocks = range(0, counts[k - 1], step) if deep or k == 1 else \
                sorted({0, max(counts[k - 1] - step, 0)})  # a spot check at start-up: head and tail only
            for a in blocks:
                _check_values(path, array_name(k, field), np.asarray(values[a : a + step]), field == "logp")
    if not deep:
        return
    for k in range(1, order + 1):
        word = arrays[(k, "word")]
        if k == 1 and not np.array_equal(word, np.arange(counts[0], dtype=word.dtype)):
            raise StoreError(f"{path / array_name(1, 'word')}: expected word ids 0..{counts[0] - 1} in order")
        parents = arrays[(k - 1, "child")] if k > 1 else None
        for a in range(0, counts[k - 1], CHUNK):
            w = np.asarray(word[a : a + CHUNK + 1], dtype=np.int64)
            if w.size and w.max() >= vocab_size:
                raise StoreError(f"{path / array_name(k, 'word')}: word id {w.max()} >= vocab size {vocab_size}")
            if parents is not None and w.size > 1:
                rises = np.diff(w) > 0
                # a new parent's first child may be smaller than the previous parent's last one
                lo, hi = np.searchsorted(parents, [a + 1, a + w.size], side="left")
                starts = np.asarray(parents[lo:hi], dtype=np.int64) - (a + 1)
                rises[starts[(starts >= 0) & (starts < rises.size)]] = True
                if not rises.all():
                    bad = a + 1 + int(np.argmin(rises))
                    raise StoreError(f"{path / array_name(k, 'word')}: entry {bad} is not above its sibling; "
                                     "expected word ids sorted within each parent")
        if k < order:
            child = arrays[(k, "child")]
            for a in range(0, counts[k - 1] + 1, CHUNK):
                c = np.asarray(child[a : a + CHUNK + 1])
                if (np.diff(c) < 0).any():
                    raise StoreError(f"{path / array_name(k, 'child')}: offsets decrease near entry {a}; "
                                     "expected non-decreasing")


def check_store(path: str | os.PathLike, deep: bool = False) -> dict:
    """Check a store without loading it: header, file sizes, dtypes, shapes, child offset ends.

    Args:
        path: the store folder.
        deep: also read every array (sorted siblings, word ids < V, monotone offsets).

    Returns:
        The header.

    Raises:
        StoreError: one line naming the file and what was expected.
    """
    path = Path(path)
    header = _read_header(path)
    check_arrays(path, header, open_arrays(path, header), deep)
    return header


# --------------------------------------------------------------------------- reading and scoring
class NgramStore:
    """An opened store: memmapped arrays plus the vocabulary; scores batches of sentences."""

    def __init__(self, path: str | os.PathLike):
        """Open and check a store (header, sizes, dtypes, offsets; the arrays stay on disk).

        Args:
            path: the store folder.

        Raises:
            StoreError: missing, truncated, foreign or inconsistent files (one line naming the file).
        """
        self.path = Path(path)
        self.header = _read_header(self.path)
        arrays = open_arrays(self.path, self.header)
        check_arrays(self.path, self.header, arrays, deep=False)
        vp = self.path / VOCAB
        if not vp.is_file():
            raise StoreError(f"{vp}: missing; expected {self.header['counts'][0]} words, one a line")
        with open(vp, encoding="utf-8") as f:
            vocab = f.read().split("\n")[:-1]
        if len(vocab) != self.header["counts"][0]:
            raise StoreError(f"{vp}: {len(vocab)} words, expected {self.header['counts'][0]} (the unigram count)")
        self._attach(vocab, arrays, vp)

    @classmethod
    def from_arrays(cls, vocab: Sequence[str], arrays: Mapping[tuple[int, str], np.ndarray]) -> NgramStore:
        """A store over arrays already in hand (a writer's memmaps before ``header.json``; no checks).

        Args:
            vocab: word by store id.
            arrays: ``{(k, kind): array}`` for every order k and kind of the format.

        Returns:
            The store (``path`` None).
        """
        self = cls.__new__(cls)
        self.path, self.header = None, {}
        self._attach(list(vocab), arrays, "vocab")
        return self

    def _attach(self, vocab: list[str], arrays: Mapping[tuple[int, str], np.ndarray], where) -> None:
        self.order: int = max(k for k, _ in arrays)
        self.counts: list[int] = [len(arrays[(k, "word")]) for k in range(1, self.order + 1)]
        self.word = {k: arrays[(k, "word")] for k in range(1, self.order + 1)}
        self.logp = {k: arrays[(k, "logp")] for k in range(1, self.order + 1)}
        self.bow = {k: arrays[(k, "bow")] for k in range(1, self.order)}
        self.child = {k: arrays[(k, "child")] for k in range(1, self.order)}
        self.vocab = vocab
        self._index: dict[str, int] | None = None  # word -> id, built on first use (~100 bytes a word)
        specials = {w: i for i, w in enumerate(vocab) if w in (BOS, EOS, UNK)}
        for special in (BOS, EOS, UNK):
            if special not in specials:
                raise StoreError(f"{where}: no {special}; expected it in every store")
        self.bos, self.eos, self.unk = specials[BOS], specials[EOS], specials[UNK]

    @property
    def index(self) -> dict[str, int]:
        """Word -> store id (built once, on first use)."""
        if self._index is None:
            self._index = {w: i for i, w in enumerate(self.vocab)}
        return self._index

    def ids(self, words: Iterable[str]) -> np.ndarray:
        """Store ids of words (``<unk>``'s for words outside the vocabulary).

        Args:
            words: the words.

        Returns:
            int64 [len(words)].
        """
        get, unk = self.index.get, self.unk
        return np.fromiter((get(w, unk) for w in words), dtype=np.int64)

    def map_symbols(self, symbols: Sequence[str]) -> np.ndarray:
        """A table from another symbol table's ids (e.g. ``words.txt``) to store ids.

        Args:
            symbols: word by id of the other table.

        Returns:
            int64 [len(symbols)]: the store id of each (``<unk>``'s where the store lacks the word).
        """
        index = self._index or {w: i for i, w in enumerate(self.vocab)}  # not kept: a server needs only the table
        return np.fromiter((index.get(w, self.unk) for w in symbols), dtype=np.int64, count=len(symbols))

    def _children(self, k: int, parent: np.ndarray, word: np.ndarray) -> np.ndarray:
        """Entry of order k whose parent (order k-1) is ``parent`` and last word ``word``, or -1 (vectorised).

        One binary search per query over the parent's sorted children, all queries advanced together.
        """
        found = np.full(parent.shape, -1, dtype=np.int64)
        sel = np.flatnonzero(parent >= 0)
        if sel.size == 0:
            return found
        child, words = self.child[k - 1], self.word[k]
        lo = np.asarray(child[parent[sel]], dtype=np.int64)
        hi = np.asarray(child[parent[sel] + 1], dtype=np.int64)
        target = word[sel]
        active = np.flatnonzero(lo < hi)
        while active.size:  # invariant: the answer, if any, lies in [lo, hi)
            mid = (lo[active] + hi[active]) >> 1
            below = words[mid] < target[active]
            lo[active] = np.where(below, mid + 1, lo[active])
            hi[active] = np.where(below, hi[active], mid)
            active = active[lo[active] < hi[active]]
        end = np.asarray(child[parent[sel] + 1], dtype=np.int64)
        inside = np.flatnonzero(lo < end)
        hit = inside[words[lo[inside]] == target[inside]]
        found[sel[hit]] = lo[hit]
        return found

    def find(self, ngrams: np.ndarray) -> np.ndarray:
        """Entry index of each n-gram in its order's arrays, or -1 where it is not stored.

        Args:
            ngrams: int [m, k] store ids, oldest word first (1 <= k <= order).

        Returns:
            int64 [m].
        """
        ngrams = np.asarray(ngrams, dtype=np.int64)
        idx = ngrams[:, 0].copy()
        for j in range(2, ngrams.shape[1] + 1):
            idx = self._children(j, idx, ngrams[:, j - 1])
        return idx

    def ngram_logprob(self, ngrams: np.ndarray, max_order: int | None = None) -> np.ndarray:
        """log10 P(last word | the words before it) by back-off, matching n-grams of at most ``max_order``
        (contexts' backoff weights of any stored length apply: the score of an n-gram not in the store).

        Args:
            ngrams: int [m, k] store ids, oldest first; the last column is the predicted word.
            max_order: the longest n-gram to use (default the store's order).

        Returns:
            float64 [m] log10 probabilities.
        """
        ngrams = np.asarray(ngrams, dtype=np.int64)
        k = ngrams.shape[1]
        top = min(k, max_order or self.order, self.order)
        logp = np.full(len(ngrams), np.nan)
        best = np.ones(len(ngrams), dtype=np.int64)  # length of the longest stored suffix
        for j in range(1, top + 1):  # shortest first: a longer stored suffix overwrites
            idx = self.find(ngrams[:, k - j :])
            hit = idx >= 0
            logp[hit] = self.logp[j][idx[hit]]
            best[hit] = j
        for j in range(1, min(k, self.order)):  # bows of the contexts longer than the match's context
            ctx = self.find(ngrams[:, k - 1 - j : k - 1])
            use = (ctx >= 0) & (j >= best)
            logp[use] += self.bow[j][ctx[use]]
        return logp

    def score_ids(self, sentences: Sequence[Sequence[int]], eos: bool = True) -> np.ndarray:
        """log10 P of each sentence after ``<s>``, all n-gram queries of the batch looked up together.

        Args:
            sentences: store ids per sentence (without ``<s>``/``</s>``).
            eos: include P(``</s>`` | ...).

        Returns:
            float64 [len(sentences)] log10 probabilities.
        """
        if not sentences:
            return np.zeros(0)
        lens = np.array([len(s) + 1 + int(eos) for s in sentences], dtype=np.int64)  # with <s> (and </s>)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        pieces = []
        for s in sentences:
            pieces.extend(([self.bos], np.asarray(s, dtype=np.int64)) + (([self.eos],) if eos else ()))
        tokens = np.concatenate(pieces).astype(np.int64)  # [total tokens]
        pos = np.arange(tokens.size) - np.repeat(starts, lens)  # offset within the sentence
        # idx[k][i]: the k-gram ending at token i (-1: not stored or crossing the sentence start)
        idx = {1: tokens}
        for k in range(2, self.order + 1):
            prev = np.full(tokens.size, -1, dtype=np.int64)
            prev[1:] = idx[k - 1][:-1]
            prev[pos < k - 1] = -1
            idx[k] = self._children(k, prev, tokens)
        scored = np.flatnonzero(pos >= 1)
        best = np.ones(scored.size, dtype=np.int64)  # order of the longest stored n-gram ending at the word
        for k in range(2, self.order + 1):
            best[idx[k][scored] >= 0] = k
        logp = np.zeros(scored.size)
        for k in range(1, self.order + 1):
            at = best == k
            logp[at] = self.logp[k][idx[k][scored[at]]]
        for j in range(1, self.order):  # bows of the contexts longer than the matched one's
            ctx = idx[j][scored - 1]
            use = (ctx >= 0) & (j >= best) & (pos[scored] >= j)
            logp[use] += self.bow[j][ctx[use]]
        sentence = np.repeat(np.arange(len(sentences)), lens)[scored]
        return np.bincount(sentence, weights=logp, minlength=len(sentences))

    def score_sentences(self, sentences: Sequence[Sequence[str]], eos: bool = True, nats: bool = False) -> np.ndarray:
        """log10 (or ln) P of each sentence given as words (outside the vocabulary: ``<unk>``).

        Args:
            sentences: word lists (without ``<s>``/``</s>``).
            eos: include P(``</s>`` | ...).
            nats: natural log instead of log10.

        Returns:
            float64 [len(sentences)].
        """
        scores = self.score_ids([self.ids(s) for s in sentences], eos=eos)
        return scores * LN10 if nats else scores
