"""One-time conversions of a released LM into an n-gram store (:mod:`language_model.ngram.store`).

- :func:`arpa_to_store`: an ARPA (``.gz`` ok) read line by line; each order's n-grams are spilled to
  memory-mapped scratch arrays sized by the ``\\data\\`` counts, then sorted (only if the file is not already
  in trie order), linked to their parents and written. What stays in RAM is the vocabulary, one order's parent
  offsets and, only for an ARPA not in trie order, that order's sort permutation.
- :func:`g_fst_to_store`: ``G.fst``/``G_no_prune.fst`` as kaldilm's ``arpa2fst`` writes it (states are
  histories, word arcs are n-grams, ``#0`` arcs the backoff weights, final weights ``</s>``), parsed from the
  OpenFST file through a memmap (:mod:`language_model.graph.fst_arrays`); each state's history is recovered by
  walking word arcs breadth-first from the unigram and ``<s>`` states.

An n-gram whose prefix the ARPA lacks (some pruned ARPAs) gets the prefix inserted with its backed-off
probability and bow 0 (STORE_FORMAT.md), as SRILM does on reading.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from language_model.ngram.store import (
    BOS,
    EOS,
    LN10,
    LOGP_ROUNDING,
    UNK,
    NgramStore,
)
from language_model.ngram.store_writer import StoreWriter, staged_store, write_store

log = logging.getLogger(__name__)

LOG10_ZERO = -99.0
_CHUNK = 1 << 21  # rows per vectorised step


class ConvertError(ValueError):
    """The input cannot be converted (the message names the file, the line or state, and what was expected)."""


def _log10_value(text: str, path, line_no: int, what: str) -> float:
    """One ARPA number: finite; a log10 probability also <= 0 (was stored as NaN/inf/positive silently).

    Raises:
        ConvertError: not a number, not finite, or a log10 probability above 0; names file, line and field.
    """
    try:
        value = float(text)
    except ValueError:
        raise ConvertError(f"{path}:{line_no}: {what} {text!r} is not a number") from None
    if not math.isfinite(value) or (what == "log10 p" and value > LOGP_ROUNDING):
        bound = "a finite number <= 0" if what == "log10 p" else "a finite number"
        raise ConvertError(f"{path}:{line_no}: {what} {text!r}: expected {bound}")
    return value

def _open_text(path: Path):
    """The file as UTF-8 text, gunzipped when it starts with gzip's magic bytes (whatever its suffix)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gzipped else open(path, encoding="utf-8")


def _keys(ids: np.ndarray) -> np.ndarray:
    """Rows of big-endian word ids as one opaque value each, ordered like the rows (lexicographic)."""
    ids = np.ascontiguousarray(ids, dtype=">u4")
    return ids.view(f"V{4 * ids.shape[1]}").ravel()


# --------------------------------------------------------------------------- ARPA
class _Spill:
    """The n-grams of one order >= 2 in scratch memmaps: ids [n, k] (big-endian), logp [n], bow [n]."""

    def __init__(self, folder: Path, k: int, n: int, with_bow: bool, create: bool = True):
        self.k, self.n, self.filled = k, n, 0 if create else n
        names = ("ids", "logp", "bow") if with_bow else ("ids", "logp")
        shapes = {"ids": (max(n, 1), k), "logp": (max(n, 1),), "bow": (max(n, 1),)}
        dtypes = {"ids": ">u4", "logp": "<f4", "bow": "<f4"}
        self.files = {name: folder / f"{k}.{name}.npy" for name in names}
        for name in ("ids", "logp", "bow"):
            if name not in names:
                setattr(self, name, None)
            elif create:
                setattr(self, name, np.lib.format.open_memmap(self.files[name], "w+", dtypes[name], shapes[name]))
            else:
                setattr(self, name, np.load(self.files[name], mmap_mode="r+"))

    def flush(self) -> None:
        for arr in (self.ids, self.logp, self.bow):
            if arr is not None:
                arr.flush()


def _in_trie_order(ids: np.ndarray) -> np.ndarray:
    """For adjacent rows of ``ids`` [m, k]: is each row strictly above the one before (lexicographically)?"""
    diff = np.asarray(ids[1:], dtype=np.int64) - np.asarray(ids[:-1], dtype=np.int64)  # [m-1, k]
    first = np.argmax(diff != 0, axis=1)  # the first column where they differ (0 if equal)
    return diff[np.arange(len(diff)), first] > 0


def _arpa_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the ARPA text.

    Raises:
        ConvertError: not UTF-8 text, or a corrupt or truncated gzip stream (was a ``BadGzipFile`` traceback or a
            ``'utf-8' codec can't decode`` line without the file name); names the file and line.
    """
    n = 0
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                yield n, line
    except UnicodeDecodeError as e:
        # text is decoded in blocks: the bad byte lies after line n, not necessarily on line n + 1
        raise ConvertError(f"{path}: not an ARPA text file (byte 0x{e.object[e.start:e.start + 1].hex()} after line "
                           f"{n} is not UTF-8; a binary file such as a G.fst? use --g_fst for those)") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ConvertError(f"{path}: not a gzipped ARPA text file (after line {n}: {e})") from None


def _read_arpa_into(path: Path, scratch: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict[int, _Spill]]:
    """Parse the ARPA: unigrams in RAM, higher orders into :class:`_Spill` memmaps."""
    declared: dict[int, int] = {}
    vocab: list[str] = []
    index: dict[str, int] = {}
    uni_logp: list[float] = []
    uni_bow: list[float] = []
    spills: dict[int, _Spill] = {}
    section, order = -1, 0
    bar = None
    try:  # the bar is closed also on an error (its line was then ended by the error message)
        for n, line in _arpa_lines(path):
            fields = line.split()
            if not fields:
                continue
            head = fields[0]
            if head.startswith("\\"):
                if head == "\\data\\":
                    section = 0
                elif head == "\\end\\":
                    break
                elif head.endswith("-grams:"):
                    section = int(head[1:].split("-")[0])
                    if section == 1:
                        if not declared:
                            raise ConvertError(f"{path}:{n}: an n-gram section before the \\data\\ counts")
                        order = max(declared)
                        bar = tqdm(total=sum(declared.values()), desc="reading ARPA", unit=" n-grams",
                                   mininterval=2.0, unit_scale=True)
                        for k in range(2, order + 1):
                            spills[k] = _Spill(scratch, k, declared.get(k, 0), k < order)
                    elif section not in spills:
                        raise ConvertError(f"{path}:{n}: section {head} not declared in \\data\\")
                continue
            if section == 0:
                if head == "ngram" and len(fields) >= 2:
                    k, _, cnt = line.split(None, 1)[1].partition("=")
                    try:
                        declared[int(k)] = int(cnt)
                    except ValueError:
                        raise ConvertError(f"{path}:{n}: expected 'ngram <k>=<count>', got {line.strip()!r}") from None
                continue
            if section < 1:
                continue
            k = section
            if len(fields) not in (k + 1, k + 2):
                raise ConvertError(f"{path}:{n}: expected a {k}-gram line (log10 p, {k} words[, bow]), got {line.strip()!r}")
            logp = _log10_value(head, path, n, "log10 p")
            bow = _log10_value(fields[k + 1], path, n, "backoff") if len(fields) == k + 2 else 0.0
            if k == 1:
                w = fields[1]
                if w in index:
                    raise ConvertError(f"{path}:{n}: the 1-gram {w!r} appears twice")
                index[w] = len(vocab)
                vocab.append(w)
                uni_logp.append(logp)
                uni_bow.append(bow)
            else:
                sp = spills[k]
                if sp.filled >= sp.n:
                    raise ConvertError(f"{path}:{n}: more {k}-grams than the {sp.n} declared in \\data\\")
                try:
                    sp.ids[sp.filled] = [index[w] for w in fields[1 : k + 1]]
                except KeyError as e:
                    raise ConvertError(f"{path}:{n}: word {e.args[0]!r} is not among the 1-grams") from None
                sp.logp[sp.filled] = logp
                if sp.bow is not None:
                    sp.bow[sp.filled] = bow
                sp.filled += 1
            if bar is not None and (n & 0xFFFF) == 0:
                bar.update(len(vocab) + sum(s.filled for s in spills.values()) - bar.n)
    finally:
        if bar is not None:
            bar.close()
    if not vocab:
        raise ConvertError(f"{path}: not an ARPA file (no \\data\\ counts or no 1-grams)")
    if declared.get(1) != len(vocab):
        raise ConvertError(f"{path}: {len(vocab)} 1-grams, the \\data\\ header declares {declared.get(1)}")
    for k, sp in spills.items():
        if sp.filled != sp.n:
            raise ConvertError(f"{path}: {sp.filled} {k}-grams, the \\data\\ header declares {sp.n}")
    return vocab, np.array(uni_logp), np.array(uni_bow), spills


def _sort_in_place(sp: _Spill, path: Path) -> None:
    """Put one order's n-grams in trie order (lexicographic ids); a no-op for an ARPA already in it."""
    ordered = all(_in_trie_order(sp.ids[a : a + _CHUNK + 1]).all() for a in range(0, max(sp.n - 1, 0), _CHUNK))
    if ordered:
        return
    log.info("%d-grams are not in trie order: sorting %d of them", sp.k, sp.n)
    perm = np.argsort(_keys(sp.ids[: sp.n]), kind="stable")
    for arr in (sp.ids, sp.logp, sp.bow):
        if arr is not None:
            arr[: sp.n] = arr[: sp.n][perm]
    del perm
    for a in range(0, max(sp.n - 1, 0), _CHUNK):
        if not _in_trie_order(sp.ids[a : a + _CHUNK + 1]).all():
            raise ConvertError(f"{path}: a {sp.k}-gram appears twice")


def _missing_prefixes(spills: dict[int, _Spill], order: int) -> dict[int, np.ndarray]:
    """Prefixes (ids [m, k]) missing from order k, highest order first (an inserted prefix may miss its own)."""
    missing: dict[int, np.ndarray] = {}
    for k in range(order, 2, -1):
        lower = spills[k - 1]
        lower_keys = _keys(lower.ids[: lower.n]) if lower.n else np.zeros(0, dtype=f"V{4 * (k - 1)}")
        found = []
        sources = [spills[k].ids[: spills[k].n]] + ([missing[k]] if k in missing else [])
        for src in sources:
            for a in range(0, len(src), _CHUNK):
                prefixes = np.unique(_keys(src[a : a + _CHUNK, : k - 1]))
                pos = np.searchsorted(lower_keys, prefixes)
                inside = pos < len(lower_keys)
                present = np.zeros(len(prefixes), dtype=bool)
                present[inside] = lower_keys[pos[inside]] == prefixes[inside]
                found.append(prefixes[~present])
        if found and sum(map(len, found)):
            keys = np.unique(np.concatenate(found))
            missing[k - 1] = np.frombuffer(keys.tobytes(), dtype=">u4").reshape(-1, k - 1).astype(np.int64)
    return missing


def _insert(sp: _Spill, rows: np.ndarray, scratch: Path) -> tuple[_Spill, np.ndarray]:
    """A new spill with ``rows`` (sorted, absent) merged in (logp NaN until patched, bow 0); their positions."""
    merged = _Spill(scratch / "merged", sp.k, sp.n + len(rows), sp.bow is not None)
    at = np.searchsorted(_keys(sp.ids[: sp.n]), _keys(rows)) + np.arange(len(rows))  # rows in the merged arrays
    for a in range(0, sp.n, _CHUNK):  # old row i goes to i + (number of inserted rows before it)
        old = np.arange(a, min(a + _CHUNK, sp.n))
        new = old + np.searchsorted(at - np.arange(len(rows)), old, side="right")
        for name in ("ids", "logp", "bow"):
            if getattr(sp, name) is not None:
                getattr(merged, name)[new] = getattr(sp, name)[a : a + len(old)]
    merged.ids[at] = rows
    merged.logp[at] = np.nan
    if merged.bow is not None:
        merged.bow[at] = 0.0
    merged.flush()
    for name, src in merged.files.items():  # the merged arrays replace the order's scratch files
        os.replace(src, sp.files[name])
    return _Spill(scratch, sp.k, merged.n, sp.bow is not None, create=False), at


def _parents(sp: _Spill, lower: _Spill | None) -> np.ndarray:
    """Row of each n-gram's prefix in the order below (every prefix is present)."""
    if lower is None:  # order 2: the prefix is a word id = its unigram row
        return np.asarray(sp.ids[: sp.n, 0], dtype=np.int64)
    lower_keys = _keys(lower.ids[: lower.n])
    out = np.empty(sp.n, dtype=np.int64)
    for a in range(0, sp.n, _CHUNK):
        prefixes = _keys(sp.ids[a : a + _CHUNK, : sp.k - 1])
        pos = out[a : a + _CHUNK] = np.searchsorted(lower_keys, prefixes)
        if (pos >= len(lower_keys)).any() or (lower_keys[np.minimum(pos, len(lower_keys) - 1)] != prefixes).any():
            raise ConvertError(f"{sp.k}-grams near row {a}: a prefix is missing after the prefix insertion")
    return out


def arpa_to_store(arpa: str | os.PathLike, out_dir: str | os.PathLike, scratch_dir: str | os.PathLike | None = None
                  ) -> Path:
    """Convert an ARPA file into a store, streaming (see the module docstring).

    Args:
        arpa: the ARPA file (``.gz`` read compressed).
        out_dir: the store folder (``<lm folder>/ngram_store``).
        scratch_dir: where the per-order scratch arrays go (default: a temporary folder beside ``out_dir``).

    Returns:
        The store folder.

    Raises:
        ConvertError: a malformed ARPA (one line naming the file and line).
        FileNotFoundError: no such file.
    """
    arpa, out_dir = Path(arpa), Path(out_dir)
    if not arpa.is_file():
        raise FileNotFoundError(f"ARPA file not found: {arpa}")
    with staged_store(out_dir) as staging:  # moved to out_dir only when complete (nothing left on failure)
        _write_arpa_store(arpa, staging, Path(scratch_dir or out_dir.parent))
    return out_dir


def _write_arpa_store(arpa: Path, out_dir: Path, scratch_dir: Path) -> None:
    """The body of :func:`arpa_to_store`: write the store into ``out_dir`` (a staging folder)."""
    scratch = Path(tempfile.mkdtemp(prefix=".ngram_convert.", dir=scratch_dir))
    try:
        (scratch / "merged").mkdir()
        vocab, uni_logp, uni_bow, spills = _read_arpa_into(arpa, scratch)
        order = max(spills, default=1)
        notes = []
        if UNK not in vocab:
            vocab.append(UNK)
            uni_logp, uni_bow = np.append(uni_logp, LOG10_ZERO), np.append(uni_bow, 0.0)
            notes.append(f"{UNK} added with log10 p = -99")
        for special in (BOS, EOS):
            if special not in vocab:
                raise ConvertError(f"{arpa}: no {special} among the 1-grams; expected it in an ARPA")
        for k in range(2, order + 1):
            _sort_in_place(spills[k], arpa)
        inserted: dict[int, np.ndarray] = {}
        for k, rows in sorted(_missing_prefixes(spills, order).items()):
            spills[k], inserted[k] = _insert(spills[k], rows, scratch)
            notes.append(f"{len(rows)} missing {k}-gram prefixes inserted")
        if notes:
            log.info("%s: %s", arpa, "; ".join(notes))
        writer = StoreWriter(out_dir, vocab, f"ARPA {arpa.name}" + (f" ({'; '.join(notes)})" if notes else ""))
        arrays = {}
        dest = writer.allocate(1, len(vocab), order)
        dest["word"][:] = np.arange(len(vocab))
        dest["logp"][:] = uni_logp
        if order > 1:
            dest["bow"][:] = uni_bow
        arrays.update({(1, kind): a for kind, a in dest.items()})
        for k in tqdm(range(2, order + 1), desc="linking orders", mininterval=2.0):
            sp = spills[k]
            parents = _parents(sp, spills.get(k - 1))
            counts = np.bincount(parents, minlength=arrays[(k - 1, "word")].shape[0])
            arrays[(k - 1, "child")][0] = 0
            np.cumsum(counts, out=arrays[(k - 1, "child")][1:])
            del parents, counts
            dest = writer.allocate(k, sp.n, order)
            for a in range(0, sp.n, _CHUNK):
                dest["word"][a : a + _CHUNK] = sp.ids[a : a + _CHUNK, k - 1]
                dest["logp"][a : a + _CHUNK] = sp.logp[a : a + _CHUNK]
                if k < order:
                    dest["bow"][a : a + _CHUNK] = sp.bow[a : a + _CHUNK]
            arrays.update({(k, kind): a for kind, a in dest.items()})
        if inserted:  # lowest order first: a prefix backs off to shorter ones, inserted ones already patched
            store = NgramStore.from_arrays(vocab, arrays)
            for k in sorted(inserted):
                rows = np.asarray(spills[k].ids[inserted[k]], dtype=np.int64)
                arrays[(k, "logp")][inserted[k]] = store.ngram_logprob(rows, max_order=k - 1)
        writer.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)



# --------------------------------------------------------------------------- G.fst (kaldilm arpa2fst)
def g_fst_to_store(g_fst: str | os.PathLike, words_txt: str | os.PathLike, out_dir: str | os.PathLike,
                   backoff_symbol: str = "#0") -> Path:
    """Convert a grammar FST written by kaldilm's ``arpa2fst`` (``G.fst``, ``G_no_prune.fst``) into a store.

    Each state is an n-gram history: the start state is ``<s>``, its ``#0`` arc leads to the unigram state;
    a word arc from history h is the n-gram (h, w) with cost -ln p, a final weight is (h, ``</s>``), a ``#0``
    arc the history's backoff weight. A state's history is the one of the first arc that reaches it in a
    breadth-first walk by history length (an arc from h reaches (h, w) or a shorter suffix of it, so the
    shortest history reaching a state is its own).

    Args:
        g_fst: the FST file.
        words_txt: its word symbol table (``words.txt`` of the LM folder).
        out_dir: the store folder.
        backoff_symbol: the disambiguation symbol on backoff arcs.

    Returns:
        The store folder.

    Raises:
        ConvertError: the FST is not in arpa2fst's shape (the message names the file and state).
        FstReadError: not a readable vector FST.
    """
    from language_model.graph.fst_arrays import read_fst_arrays
    from nejm_b2txt_utils.symbol_table import read_symbols

    g_fst = Path(g_fst)
    fst = read_fst_arrays(g_fst)
    symbols = read_symbols(words_txt)
    labels = {w: i for i, w in symbols.items()}
    backoff = labels.get(backoff_symbol, -1)
    used = np.unique(np.concatenate([fst.ilabel, fst.olabel]))
    missing = np.setdiff1d(used[used != 0], np.fromiter(symbols, dtype=np.int64, count=len(symbols)))
    if len(missing) or backoff < 0:  # another LM's words.txt (was a KeyError/IndexError traceback)
        what = (f"no {backoff_symbol} (backoff) symbol" if backoff < 0
                else f"label {int(missing[0])} of the FST is not in it ({len(missing)} labels missing)")
        raise ConvertError(f"{words_txt}: {what}; expected the words.txt of {g_fst}'s own LM folder (--words)")
    # a words.txt of another LM with enough symbols passes the check above and shows up as a malformed FST:
    hint = f" (or --words {words_txt} is not the words.txt of this FST's LM: a --words of another LM causes this)"
    n_states = len(fst.final)
    is_backoff = fst.ilabel == backoff
    is_word = ~is_backoff & (fst.olabel != 0)
    if (~is_backoff & ~is_word).any():
        s = int(fst.state[np.argmax(~is_backoff & ~is_word)])
        raise ConvertError(f"{g_fst}: state {s} has an epsilon arc; expected word arcs and {backoff_symbol} backoff "
                           f"arcs only (a grammar written by kaldilm's arpa2fst){hint}")
    if (is_word & (fst.ilabel != fst.olabel)).any():
        raise ConvertError(f"{g_fst}: a word arc with different input and output labels; expected an acceptor{hint}")
    bo_dest = np.full(n_states, -1, dtype=np.int64)
    bo_cost = np.zeros(n_states)
    bo_dest[fst.state[is_backoff]] = fst.nextstate[is_backoff]
    bo_cost[fst.state[is_backoff]] = fst.weight[is_backoff]
    start = fst.start
    unigram_state = int(bo_dest[start]) if bo_dest[start] >= 0 else start
    # the store's vocabulary: the words with a unigram arc (words.txt order), then the specials it lacks
    uni = np.flatnonzero(is_word & (fst.state == unigram_state))
    vocab = [symbols[int(label)] for label in np.sort(fst.olabel[uni])]
    vocab += [w for w in (BOS, EOS, UNK) if w not in vocab]
    to_store = np.full(max(symbols) + 1, -1, dtype=np.int64)
    to_store[[labels[w] for w in vocab if w in labels]] = [i for i, w in enumerate(vocab) if w in labels]
    if (to_store[fst.olabel[is_word]] < 0).any():
        raise ConvertError(f"{g_fst}: a word arc whose word has no unigram arc; expected every word in the "
                           f"unigram state{hint}")
    eos, bos = vocab.index(EOS), vocab.index(BOS)

    level = np.full(n_states, -1, dtype=np.int64)  # history length of each state
    entry = np.full(n_states, -1, dtype=np.int64)  # its history's row in that order's arrays
    level[unigram_state] = 0
    orders: list[dict[str, np.ndarray]] = []
    logp1 = np.full(len(vocab), LOG10_ZERO, dtype=np.float32)
    logp1[to_store[fst.olabel[uni]]] = -fst.weight[uni] / LN10
    if np.isfinite(fst.final[unigram_state]):
        logp1[eos] = -fst.final[unigram_state] / LN10
    orders.append({"word": np.arange(len(vocab), dtype=np.uint32), "logp": logp1})
    dest = fst.nextstate[uni]
    fresh = level[dest] < 0
    level[dest[fresh]], entry[dest[fresh]] = 1, to_store[fst.olabel[uni][fresh]]
    if start != unigram_state:
        level[start], entry[start] = 1, bos
    for hist in range(1, 64):
        frontier = np.flatnonzero(level == hist)
        orders[hist - 1]["bow"] = np.zeros(len(orders[hist - 1]["word"]), dtype=np.float32)
        has_bo = frontier[bo_dest[frontier] >= 0]
        orders[hist - 1]["bow"][entry[has_bo]] = -bo_cost[has_bo] / LN10
        arcs = np.flatnonzero(is_word & (level[fst.state] == hist))
        finals = frontier[np.isfinite(fst.final[frontier])]
        if arcs.size + finals.size == 0:
            break
        parent = np.concatenate([entry[fst.state[arcs]], entry[finals]])
        word = np.concatenate([to_store[fst.olabel[arcs]], np.full(finals.size, eos)])
        logp = np.concatenate([-fst.weight[arcs], -fst.final[finals]]) / LN10
        rank = np.lexsort((word, parent))  # trie order: by parent row, then word
        row = np.empty(rank.size, dtype=np.int64)
        row[rank] = np.arange(rank.size)
        orders[hist - 1]["child"] = np.concatenate(
            [[0], np.cumsum(np.bincount(parent, minlength=len(orders[hist - 1]["word"])))]).astype(np.int64)
        orders.append({"word": word[rank].astype(np.uint32), "logp": logp[rank].astype(np.float32)})
        dest = fst.nextstate[arcs]
        fresh = level[dest] < 0
        if np.unique(dest[fresh]).size != fresh.sum():
            raise ConvertError(f"{g_fst}: a state reached from two histories of length {hist}; expected an "
                               f"n-gram grammar (one state per history){hint}")
        level[dest[fresh]], entry[dest[fresh]] = hist + 1, row[: arcs.size][fresh]
    unreached = int((level < 0).sum())
    if unreached:
        log.warning("%s: %d states not reached from the start state; ignored", g_fst, unreached)
    order = len(orders)
    if order > 1:
        orders[-1].pop("bow", None)
    note = "" if UNK in symbols.values() and labels[UNK] in fst.olabel[uni] else f"; {UNK} added with log10 p = -99"
    with staged_store(out_dir) as staging:  # moved to out_dir only when complete (nothing left on failure)
        write_store(staging, vocab, orders, source=f"{g_fst.name} (kaldilm grammar){note}")
    return Path(out_dir)
