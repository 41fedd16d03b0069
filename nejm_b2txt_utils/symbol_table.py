"""Kaldi/OpenFST symbol tables (``words.txt``, ``tokens.txt``): ``SYMBOL ID`` per line.

Read by the graph builder, the decoder (word ids -> text) and the tests; written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nejm_b2txt_utils.atomic_io import atomic_write_text

__all__ = ["read_symbols", "symbols_by_id", "write_symbols"]


def read_symbols(path: str | os.PathLike) -> dict[int, str]:
    """Read a symbol table as id -> symbol (blank lines are skipped).

    Args:
        path: the ``words.txt``/``tokens.txt`` file.

    Returns:
        ``{id: symbol}``.

    Raises:
        OSError: the file cannot be read.
        ValueError: a line is not UTF-8 text or not ``SYMBOL ID`` with a non-negative integer id, an id
            appears twice, or the file holds no symbol (message: file, line number, line).
    """
    table: dict[int, str] = {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{n}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{n}: expected 'SYMBOL ID', got {line.rstrip()!r}")
            if int(parts[1]) in table:
                raise ValueError(f"{path}:{n}: id {parts[1]} given twice ({table[int(parts[1])]!r}, {parts[0]!r})")
            table[int(parts[1])] = parts[0]
    if not table:
        raise ValueError(f"{path}: no symbols (an empty symbol table)")
    return table


def symbols_by_id(path: str | os.PathLike) -> list[str]:
    """A symbol table as a list indexed by id; gaps (which Kaldi tables never have) become ``''``.

    Args:
        path: the table file.

    Returns:
        ``symbols[id]`` for ids ``0..max_id``.

    Raises:
        OSError, ValueError: as :func:`read_symbols`.
    """
    table = read_symbols(path)
    symbols = [""] * (max(table) + 1 if table else 0)
    for i, s in table.items():
        symbols[i] = s
    return symbols


def write_symbols(symbols: Sequence[str], path: str | os.PathLike) -> Path:
    """Write ``symbols`` (in id order: ``symbols[i]`` gets id ``i``) atomically.

    Args:
        symbols: the symbols; none may contain whitespace.
        path: the output file.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: a symbol is empty or contains whitespace.
    """
    bad = [s for s in symbols if not s or any(c.isspace() for c in s)]
    if bad:
        raise ValueError(f"{path}: symbols must be non-empty without whitespace, got {bad[:5]}")
    return atomic_write_text(path, "".join(f"{s} {i}\n" for i, s in enumerate(symbols)))
