"""The one checked reader of the OpenFST files of an LM folder (``TLG.fst``, ``G.fst``, ``G_no_prune.fst``).

kaldifst's ``StdVectorFst.read`` answers a truncated or damaged file with ``None`` (the caller then failed
later with ``'NoneType' object has no attribute 'num_states'``), or with ``MemoryError``/``ValueError`` when
the header's counts are garbage (OpenFST reserves what the header claims). :func:`read_fst` checks the
header against the file size first (magic number, sane type strings, at least 12 bytes per claimed state
of a vector FST: final weight + arc count), then reads, and turns every failure into one
:class:`FstReadError` that names the file: ``<path>: not a readable OpenFST file, truncated or corrupt?
(<what>)``. A flipped byte inside the arc table is not detected (that would need a pass over every arc).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["FST_MAGIC", "FstReadError", "read_fst", "read_fst_header"]

FST_MAGIC = 2125659606  # OpenFST's file magic number (int32, little-endian on disk)
_MAX_TYPE_LEN = 64  # "vector", "const", "standard", "log64"... a longer type string is garbage
_VECTOR_STATE_BYTES = 4 + 8  # per state of a VectorFst: final weight (float32) + number of arcs (int64)


class FstReadError(ValueError):
    """An FST file that cannot be read; the message names the file and what is wrong."""


def _fail(path: Path, what: str) -> FstReadError:
    return FstReadError(f"{path}: not a readable OpenFST file, truncated or corrupt? ({what})")


def _read_header(path: Path, size: int) -> dict:
    """The OpenFST header: magic, fst type, arc type, version, flags, properties, start, #states, #arcs."""
    with open(path, "rb") as f:
        head = f.read(4 + 4 + _MAX_TYPE_LEN + 4 + _MAX_TYPE_LEN + 4 + 4 + 8 + 8 + 8 + 8)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > len(head):
            raise _fail(path, f"{size} bytes, shorter than an FST header")
        (value,) = struct.unpack_from(fmt, head, pos)
        pos += n
        return value

    def string(what: str) -> str:
        nonlocal pos
        n = take("<i")
        if not 0 < n <= _MAX_TYPE_LEN or pos + n > len(head):
            raise _fail(path, f"bad {what} in the header")
        text = head[pos : pos + n].decode("ascii", errors="replace")
        pos += n
        return text

    if take("<i") != FST_MAGIC:
        raise _fail(path, "no OpenFST magic number")
    header = {"fst_type": string("FST type"), "arc_type": string("arc type")}
    header.update(version=take("<i"), flags=take("<i"), properties=take("<Q"), start=take("<q"),
                  num_states=take("<q"), num_arcs=take("<q"), header_bytes=pos)
    return header


def read_fst_header(path: str | os.PathLike) -> dict:
    """The checked OpenFST header of a file, without reading the FST.

    Args:
        path: the ``.fst`` file.

    Returns:
        ``{"fst_type", "arc_type", "version", "flags", "properties", "start", "num_states", "num_arcs",
        "header_bytes"}`` (``header_bytes``: where the states begin).

    Raises:
        FstReadError: no OpenFST magic number, garbage type strings, or shorter than a header.
    """
    path = Path(path)
    return _read_header(path, path.stat().st_size)


def read_fst(path: str | os.PathLike):
    """Read a ``StdVectorFst`` from an LM folder, checked.

    Args:
        path: the ``.fst`` file (OpenFST binary, as kaldifst/OpenFST/Kaldi write it).

    Returns:
        The ``kaldifst.StdVectorFst``, with at least one state and a valid start state.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FstReadError: the file is truncated, corrupt, empty (no states) or not an FST; the message names the
            file and says "not a readable OpenFST file, truncated or corrupt?".
    """
    import kaldifst

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} not found in {path.parent}")
    size = path.stat().st_size
    header = _read_header(path, size)
    n_states = header["num_states"]
    if header["fst_type"] == "vector" and (
        n_states < -1 or n_states * _VECTOR_STATE_BYTES > size - header["header_bytes"]
    ):
        raise _fail(path, f"the header claims {n_states} states, more than {size} bytes can hold")
    try:
        fst = kaldifst.StdVectorFst.read(str(path))
    except (MemoryError, ValueError, RuntimeError) as exc:  # OpenFST reserved what a damaged count claimed
        raise _fail(path, f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
    if fst is None:
        raise _fail(path, f"{header['fst_type'].capitalize()}Fst::Read failed")
    if n_states >= 0 and fst.num_states != n_states:
        raise _fail(path, f"{fst.num_states} states read, the header says {n_states}")
    if fst.num_states == 0 or not 0 <= fst.start < fst.num_states:
        raise _fail(path, f"empty FST or no start state ({fst.num_states} states, start {fst.start})")
    return fst
