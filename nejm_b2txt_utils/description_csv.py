"""The block description CSV (``data/t15_copyTaskData_description.csv``, spec §1.6).

One row per recording block: Date, Post-implant day, Block number, Number of sentences, Corpus,
Split (``Train`` or ``Val/Test``). The evaluator uses it to attach a corpus to each trial.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from nejm_b2txt_utils.atomic_io import atomic_open

CSV_NAME = "t15_copyTaskData_description.csv"  # beside the hdf5_data_final folder
COLUMNS = ("Date", "Post-implant day", "Block number", "Number of sentences", "Corpus", "Split")
CORPORA = ("50-Word", "Switchboard", "Openwebtext", "Harvard", "Random", "Freq words")
SPLIT_VALUES = ("Train", "Val/Test")


@dataclass(frozen=True)
class BlockRow:
    """One row of ``t15_copyTaskData_description.csv``: a block of one session (date, day, corpus, split)."""
    date: str
    post_implant_day: int
    block_num: int
    n_sentences: int
    corpus: str
    split: str


def session_date(session: str) -> str | None:
    """``t15.2023.08.13`` -> ``2023-08-13``; ``None`` for a name that is not ``<participant>.YYYY.MM.DD``.

    Args:
        session: a session folder name (any: users add their own, e.g. ``my_new_day``).

    Returns:
        The date as the CSV writes it, or ``None``.
    """
    parts = session.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]) or [len(p) for p in parts[1:]] != [4, 2, 2]:
        return None
    return "-".join(parts[1:])


def session_to_date(session: str) -> str:
    """``t15.2023.08.13`` -> ``2023-08-13``.

    Args:
        session: a session name ``<participant>.YYYY.MM.DD``.

    Returns:
        The date as the CSV writes it.

    Raises:
        ValueError: the name has not four dot-separated parts.
    """
    parts = session.split(".")
    if len(parts) != 4:
        raise ValueError(f"session {session!r}: expected <participant>.YYYY.MM.DD")
    return "-".join(parts[1:])


def read_description_csv(path: str | os.PathLike) -> list[BlockRow]:
    """Read the description CSV.

    Args:
        path: ``t15_copyTaskData_description.csv``.

    Returns:
        One :class:`BlockRow` per line, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing column, a non-integer number or an unknown split (message: file, line, field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: description CSV not found")
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}: expected {list(COLUMNS)}")
        for line_no, rec in enumerate(reader, start=2):
            try:
                row = BlockRow(rec["Date"], int(rec["Post-implant day"]), int(rec["Block number"]),
                               int(rec["Number of sentences"]), rec["Corpus"], rec["Split"])
            except ValueError as exc:
                raise ValueError(f"{path}: line {line_no}: {exc}") from exc
            if row.split not in SPLIT_VALUES:
                raise ValueError(f"{path}: line {line_no}: Split {row.split!r}: expected one of {SPLIT_VALUES}")
            rows.append(row)
    return rows


def write_description_csv(rows: list[BlockRow], path: str | os.PathLike) -> None:
    """Write the description CSV atomically (the original's columns).

    Args:
        rows: the blocks.
        path: the output file.
    """
    with atomic_open(path, "w") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.date, r.post_implant_day, r.block_num, r.n_sentences, r.corpus, r.split])


class CorpusLookup:
    """``lookup(session, block_num) -> corpus`` by matching Date and Block number (first match)."""

    def __init__(self, rows: list[BlockRow]):
        """Index ``rows`` by (date, block number); the first row of a pair wins.

        Args:
            rows: the CSV's rows.
        """
        self._map: dict[tuple[str, int], str] = {}
        for r in rows:
            self._map.setdefault((r.date, r.block_num), r.corpus)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> CorpusLookup:
        """A lookup over the CSV at ``path``.

        Args:
            path: the description CSV.

        Returns:
            The lookup.

        Raises:
            FileNotFoundError, ValueError: as :func:`read_description_csv`.
        """
        return cls(read_description_csv(path))

    def __call__(self, session: str, block_num: int) -> str:
        """The corpus of a block.

        Args:
            session: session name (``t15.YYYY.MM.DD``).
            block_num: block number within the session.

        Returns:
            The corpus name, or ``'unknown'``.
        """
        date = session_date(session)  # a session not named by date (my_new_day) has no CSV rows: 'unknown'
        return "unknown" if date is None else self._map.get((date, int(block_num)), "unknown")
