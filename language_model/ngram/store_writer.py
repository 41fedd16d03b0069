"""Writing a memory-mapped n-gram store (the format of ``language_model/ngram/store.py``): one order at a time,
from in-memory or memory-mapped arrays, ``header.json`` last so a half-written store is never taken for one;
:func:`staged_store` writes it beside its place and moves it in only when complete, so an interrupted
conversion leaves no half-written folder (and a previous store untouched)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from language_model.ngram.store import (
    BOS,
    CHUNK,
    DTYPES,
    EOS,
    FORMAT,
    HEADER,
    UNK,
    VERSION,
    VOCAB,
    StoreError,
    array_length,
    array_name,
    check_arrays,
    kinds_of_order,
    open_arrays,
)
from nejm_b2txt_utils.atomic_io import atomic_write_json, atomic_write_text, default_dir_mode


class StoreWriter:
    """Writes a store one order at a time; :meth:`close` checks it and writes ``header.json`` last.

    Use :meth:`add_order` with whole arrays (in memory or memory-mapped), or :meth:`allocate` to get writable
    memmaps to fill in place (nothing of the order held in RAM).
    """

    def __init__(self, out_dir: str | os.PathLike, vocab: Sequence[str], source: str = ""):
        """Start a store (an existing ``header.json`` is removed first, so a half-rewritten store is incomplete).

        Args:
            out_dir: the store folder (``<lm folder>/ngram_store``), created if missing.
            vocab: word by store id; must hold ``<unk>`` and be free of duplicates and whitespace.
            source: free text recorded in the header (what the store was made from).

        Raises:
            ValueError: ``vocab`` lacks ``<unk>``, has duplicates or words with whitespace.
        """
        self.out = Path(out_dir)
        self.vocab = list(vocab)
        if UNK not in self.vocab:
            raise ValueError(f"store vocabulary lacks {UNK} (add it with log10 p = -99)")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("store vocabulary has duplicate words")
        if any(not w or w != w.strip() or len(w.split()) != 1 for w in self.vocab):
            raise ValueError("store vocabulary has an empty word or a word with whitespace")
        self.source = source
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / HEADER).unlink(missing_ok=True)
        self.counts: dict[int, int] = {}
        self._open: list[np.memmap] = []

    def allocate(self, k: int, n: int, order: int) -> dict[str, np.memmap]:
        """Create the arrays of order ``k`` (``n`` entries) as writable memmaps for the caller to fill.

        Args:
            k: the order (1-based).
            n: its number of n-grams (``len(vocab)`` for k = 1).
            order: the store's highest order N (``bow``/``child`` exist for k < N).

        Returns:
            ``{"word", "logp"[, "bow", "child"]: np.memmap}`` of lengths n (child: n + 1).

        Raises:
            ValueError: k = 1 with ``n != len(vocab)``, or k outside 1..order.
        """
        if not 1 <= k <= order:
            raise ValueError(f"order {k} outside 1..{order}")
        if k == 1 and n != len(self.vocab):
            raise ValueError(f"order 1 must have one entry per vocabulary word ({len(self.vocab)}), got {n}")
        self.counts[k] = int(n)
        self.order = order
        out = {}
        for kind in kinds_of_order(k, order):
            out[kind] = np.lib.format.open_memmap(self.out / array_name(k, kind), mode="w+", dtype=DTYPES[kind],
                                                  shape=(array_length(kind, n),))
            self._open.append(out[kind])
        return out

    def add_order(self, k: int, order: int, word: np.ndarray, logp: np.ndarray, bow: np.ndarray | None = None,
                  child: np.ndarray | None = None) -> None:
        """Write the arrays of order ``k``, copied in chunks (memmapped inputs are never read whole).

        Args:
            k: the order (1-based).
            order: the store's highest order N.
            word: [n_k] last word id of each k-gram (grouped by parent, sorted by word within a parent).
            logp: [n_k] log10 P(w | prefix).
            bow: [n_k] log10 backoff weight (k < N; None: zeros).
            child: [n_k + 1] child offsets into order k+1 (k < N).

        Raises:
            ValueError: a missing or wrongly sized array.
        """
        n = len(word)
        given = {"word": word, "logp": logp, "bow": bow, "child": child}
        if k < order and child is None:
            raise ValueError(f"order {k} < {order} needs child offsets")
        dest = self.allocate(k, n, order)
        for kind, arr in dest.items():
            src = given[kind]
            if src is None:  # bow of a store without backoff weights
                arr[:] = 0.0
                continue
            if len(src) != len(arr):
                raise ValueError(f"order {k} {kind}: expected {len(arr)} entries, got {len(src)}")
            for a in range(0, len(arr), CHUNK):
                arr[a : a + CHUNK] = np.asarray(src[a : a + CHUNK])

    def close(self) -> Path:
        """Flush, check the whole store (:func:`check_store`, deep) and write ``header.json``.

        Returns:
            The store folder.

        Raises:
            StoreError: the arrays are inconsistent (nothing is marked complete).
        """
        for arr in self._open:
            arr.flush()
        self._open.clear()
        order = max(self.counts)
        if sorted(self.counts) != list(range(1, order + 1)):
            raise StoreError(f"{self.out}: orders written {sorted(self.counts)}, expected 1..{order}")
        atomic_write_text(self.out / VOCAB, "".join(w + "\n" for w in self.vocab))
        files = {VOCAB: (self.out / VOCAB).stat().st_size}
        for k in range(1, order + 1):
            for kind in kinds_of_order(k, order):
                files[array_name(k, kind)] = (self.out / array_name(k, kind)).stat().st_size
        header = {"format": FORMAT, "version": VERSION, "order": order,
                  "counts": [self.counts[k] for k in range(1, order + 1)], "vocab_size": len(self.vocab),
                  "log_base": 10, "bos": BOS, "eos": EOS, "unk": UNK, "source": self.source, "files": files}
        check_arrays(self.out, header, open_arrays(self.out, header), deep=True)
        atomic_write_json(self.out / HEADER, header)
        return self.out


def write_store(out_dir: str | os.PathLike, vocab: Sequence[str], orders: Iterable[Mapping[str, np.ndarray]],
                source: str = "") -> Path:
    """Write a store from per-order arrays (see the module docstring for their meaning).

    Args:
        out_dir: the store folder.
        vocab: word by store id (holds ``<unk>``); ``len(vocab) == n_1``.
        orders: for k = 1..N a mapping ``{"word", "logp", "bow", "child"}`` of arrays (memmaps welcome; ``bow``
            optional; ``bow``/``child`` ignored for the highest order). A generator is consumed one order at a
            time, so an order can be freed before the next is built; N is then taken from ``len(orders)`` if it
            has one, else ``orders`` must be a sequence.
        source: free text recorded in the header.

    Returns:
        The store folder.

    Raises:
        ValueError, StoreError: wrong lengths, unsorted words, child offsets not ending at the next count.
    """
    if not hasattr(orders, "__len__"):
        orders = list(orders)
    n_orders = len(orders)  # type: ignore[arg-type]
    writer = StoreWriter(out_dir, vocab, source)
    for k, arrays in enumerate(orders, 1):
        writer.add_order(k, n_orders, arrays["word"], arrays["logp"], arrays.get("bow"),
                         arrays.get("child") if k < n_orders else None)
    return writer.close()


def _is_store_file(name: str) -> bool:
    """Whether ``name`` is one of a store's files (``header.json``, ``vocab.txt``, ``<k>.<kind>.npy``)."""
    if name in (HEADER, VOCAB):
        return True
    k, _, rest = name.partition(".")
    return k.isdigit() and rest in {f"{kind}.npy" for kind in DTYPES}


def check_store_target(out_dir: str | os.PathLike) -> None:
    """Check a store's destination before any work: missing, empty, or a store (only store files: a complete one
    or the remains of a half-written one), which a new store may replace.

    Args:
        out_dir: the store folder.

    Raises:
        StoreError: ``out_dir`` is a file, or a folder holding files that are not a store's (never deleted).
    """
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise StoreError(f"{out}: is a file; expected a folder for the n-gram store")
        foreign = sorted(p.name for p in out.iterdir() if not _is_store_file(p.name))
        if foreign:
            raise StoreError(f"{out}: holds {foreign[0]!r} ({len(foreign)} files that are not a store's); expected "
                             "a missing or empty folder, or an n-gram store to replace")


@contextlib.contextmanager
def staged_store(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Write a store into a temporary sibling folder and move it to ``out_dir`` only when the block succeeds.

    On any failure or interrupt (``BaseException``, Ctrl-C included) the temporary folder (and any parent folder
    created for it) is removed and ``out_dir`` is left as it was: missing, or the previous store untouched (was: a half-written folder without
    ``header.json`` at ``out_dir``). On success a previous store is replaced (moved aside, the new one renamed
    in, the old one removed).

    Args:
        out_dir: the store folder: missing, empty, or a store (only store files: a complete one or the remains
            of a half-written one); anything else is refused so that no other file is deleted.

    Yields:
        The temporary folder to write the store into (pass it to :class:`StoreWriter` / :func:`write_store`).

    Raises:
        StoreError: ``out_dir`` is a file, or a folder holding files that are not a store's.
    """
    out = Path(out_dir)
    check_store_target(out)
    created = [p for p in out.absolute().parents if not p.exists()]  # deepest first; removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing.", dir=out.parent))
    old = None
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.chmod(tmp, default_dir_mode())  # mkdtemp's 0o700 would hide the store from another user's server
        os.replace(tmp, out)
    except BaseException:
        if old is not None and (old / out.name).exists() and not out.exists():  # put the previous store back
            os.replace(old / out.name, out)
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: something else was written there meanwhile
                folder.rmdir()
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
