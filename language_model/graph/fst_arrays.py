"""An OpenFST ``VectorFst`` file (``StdArc``) as flat numpy arrays, read through a memmap.

The binary layout after the header (:func:`language_model.graph.fst_io.read_fst_header`; no symbol tables in
the files kaldilm/kaldifst write) is, per state: final weight (float32), number of arcs (int64), then that
many arcs of ilabel (int32), olabel (int32), weight (float32), nextstate (int32). States are variable length,
so one pass finds where each begins; the arcs are then gathered at once. Used to turn ``G_no_prune.fst`` into
an n-gram store without kaldifst (whose per-arc Python iteration is ~100x slower).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from language_model.graph.fst_io import FstReadError, read_fst_header

_STATE_WORDS = 3  # final weight + int64 arc count, in 4-byte words
_ARC_WORDS = 4


@dataclass
class FstArrays:
    """A vector FST: ``final`` [S] (tropical cost, inf: not final), arcs sorted by source state."""

    start: int
    final: np.ndarray  # float32 [S]
    state: np.ndarray  # int64 [A] source state of each arc
    ilabel: np.ndarray  # int32 [A]
    olabel: np.ndarray  # int32 [A]
    weight: np.ndarray  # float32 [A]
    nextstate: np.ndarray  # int32 [A]


def read_fst_arrays(path: str | os.PathLike, progress: bool = True) -> FstArrays:
    """Read a ``vector``/``standard`` FST file into arrays.

    Args:
        path: the ``.fst`` file.
        progress: show tqdm progress over the states.

    Returns:
        The :class:`FstArrays`.

    Raises:
        FstReadError: not a vector FST of standard arcs, or truncated (the message names the file).
    """
    path = Path(path)
    header = read_fst_header(path)
    if header["fst_type"] != "vector" or header["arc_type"] != "standard" or header["flags"] & 0x3:
        raise FstReadError(f"{path}: a {header['fst_type']}/{header['arc_type']} FST (flags {header['flags']}); "
                           "expected an OpenFST vector FST of standard arcs without symbol tables")
    n_states, body = header["num_states"], header["header_bytes"]
    size = path.stat().st_size
    if (size - body) % 4 or n_states < 0:
        raise FstReadError(f"{path}: {size} bytes do not hold {n_states} whole states; truncated?")
    words = np.memmap(path, dtype="<i4", mode="r", offset=body)  # the body as 4-byte words
    starts = np.empty(n_states, dtype=np.int64)  # word offset of each state
    at = 0
    total = len(words)
    for s in tqdm(range(n_states), desc=f"indexing {path.name}", unit=" states", mininterval=2.0,
                  disable=not progress or n_states < 1_000_000):
        if at + _STATE_WORDS > total:
            raise FstReadError(f"{path}: ends inside state {s} of {n_states}; truncated?")
        starts[s] = at
        n_arcs = int(words[at + 1]) | (int(words[at + 2]) << 32)
        at += _STATE_WORDS + _ARC_WORDS * n_arcs
    if at > total:
        raise FstReadError(f"{path}: ends {4 * (at - total)} bytes inside the arcs of its last states; truncated?")
    if at < total:
        raise FstReadError(f"{path}: {4 * (total - at)} bytes past the last state; expected the end of the file")
    floats = words.view("<f4")
    lo = np.asarray(words[starts + 1], dtype=np.int64) & 0xFFFFFFFF
    n_arcs = lo | (np.asarray(words[starts + 2], dtype=np.int64) << 32)  # [S]
    state = np.repeat(np.arange(n_states, dtype=np.int64), n_arcs)  # [A]
    first = np.repeat(starts + _STATE_WORDS, n_arcs)
    rank = np.arange(len(state)) - np.repeat(np.cumsum(n_arcs) - n_arcs, n_arcs)  # arc number within its state
    at_arc = first + _ARC_WORDS * rank  # [A] word offset of each arc
    return FstArrays(
        start=int(header["start"]),
        final=np.asarray(floats[starts]),
        state=state,
        ilabel=np.asarray(words[at_arc]),
        olabel=np.asarray(words[at_arc + 1]),
        weight=np.asarray(floats[at_arc + 2]),
        nextstate=np.asarray(words[at_arc + 3]),
    )
