"""Word-level n-best from a raw Kaldi lattice (the first decoding stage after the WFST search).

``lattice_word_nbest`` replaces Kaldi's ``GetLattice`` (word determinization with
``DeterminizeLatticePruned``) + ``ShortestPath(n)`` + ``ConvertNbestToVector``, which kaldi-decoder
does not expose (spec §4.4, §9.2 d, §9.5.2):
  1. read the raw lattice's arcs exactly (OpenFST binary form; the text form rounds to 6 digits);
  2. build a tropical acceptor on word labels with weight graph + acoustic, remove epsilons and
     determinize it, both pruned at ``lattice_beam``: one path per distinct word sequence;
  3. ``shortest_path(n)`` lists the best ``n`` distinct word sequences;
  4. a Viterbi pass over lattice x (trie of those sequences) recovers, for each sequence, the
     (graph, acoustic) split of its best alignment, which is what Kaldi's determinization keeps;
  5. sequences worse than best + ``lattice_beam`` are dropped (the pruned determinization does that).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nejm_b2txt_utils.hypothesis import Hypothesis

_FST_MAGIC = 2125659606
_ARC = np.dtype(
    [("ilabel", "<i4"), ("olabel", "<i4"), ("graph", "<f4"), ("acoustic", "<f4"), ("next", "<i4")]
)


@dataclass
class RawLattice:
    """A Kaldi ``Lattice`` as plain arrays: per state its arcs and its final (graph, acoustic) weight."""

    start: int
    arcs: list[np.ndarray]  # per state, a structured array of _ARC
    finals: dict[int, tuple[float, float]]


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<i", buf, pos)
    return buf[pos + 4 : pos + 4 + n].decode("ascii"), pos + 4 + n


def parse_lattice_bytes(buf: bytes) -> RawLattice:
    """Parse an OpenFST binary ``vector`` FST with ``lattice4`` arcs (what ``Lattice.write`` produces).

    Args:
        buf: the file's bytes.

    Returns:
        The lattice as arrays (weights: graph and acoustic costs, float32 exact).

    Raises:
        ValueError: bad magic, another FST/arc type, or header flags kaldi-decoder never writes.
    """
    (magic,) = struct.unpack_from("<i", buf, 0)
    if magic != _FST_MAGIC:
        raise ValueError(f"lattice: bad OpenFST magic {magic}")
    fst_type, pos = _read_string(buf, 4)
    arc_type, pos = _read_string(buf, pos)
    if fst_type != "vector" or arc_type != "lattice4":
        raise ValueError(f"lattice: expected a vector FST of lattice4 arcs, got {fst_type}/{arc_type}")
    _version, flags, _props, start, n_states, _n_arcs = struct.unpack_from("<iiQqqq", buf, pos)
    pos += 4 + 4 + 8 + 8 + 8 + 8
    if flags & 0x7:  # input/output symbol tables or alignment flag: not written by kaldi-decoder
        raise ValueError(f"lattice: unsupported header flags {flags:#x}")
    arcs: list[np.ndarray] = []
    finals: dict[int, tuple[float, float]] = {}
    for s in range(n_states):
        fg, fa, n = struct.unpack_from("<ffq", buf, pos)
        pos += 16
        if np.isfinite(fg) and np.isfinite(fa):
            finals[s] = (float(fg), float(fa))
        arcs.append(np.frombuffer(buf, dtype=_ARC, count=n, offset=pos))
        pos += n * _ARC.itemsize
    return RawLattice(start=int(start), arcs=arcs, finals=finals)


def read_lattice(lattice) -> RawLattice:
    """A ``kaldifst.Lattice`` -> :class:`RawLattice` with exact float32 weights.

    Args:
        lattice: the raw lattice (written to a temporary file in ``/dev/shm`` when possible, then parsed).

    Returns:
        The parsed lattice.
    """
    tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="b2txt_lat_", suffix=".fst", dir=tmp_dir)
    os.close(fd)
    try:
        lattice.write(path)
        with open(path, "rb") as f:
            return parse_lattice_bytes(f.read())
    finally:
        os.unlink(path)


def _topological_order(lat: RawLattice) -> list[int]:
    n = len(lat.arcs)
    indeg = np.zeros(n, dtype=np.int64)
    for a in lat.arcs:
        if len(a):
            np.add.at(indeg, a["next"], 1)
    order, stack = [], [s for s in range(n) if indeg[s] == 0]
    while stack:
        s = stack.pop()
        order.append(s)
        for d in lat.arcs[s]["next"].tolist():
            indeg[d] -= 1
            if indeg[d] == 0:
                stack.append(d)
    if len(order) != n:
        raise ValueError("lattice has a cycle; expected an acyclic decoder lattice")
    return order


def _word_acceptor_text(lat: RawLattice) -> str:
    """Tropical acceptor on output (word) labels, weight = graph + acoustic; start state listed first."""
    lines: list[str] = []
    states = [lat.start] + [s for s in range(len(lat.arcs)) if s != lat.start]
    for s in states:
        a = lat.arcs[s]
        if len(a):
            w = a["graph"].astype(np.float64) + a["acoustic"]
            lines.extend(
                f"{s} {d} {o} {o} {x:.9g}"
                for d, o, x in zip(a["next"].tolist(), a["olabel"].tolist(), w.tolist())
            )
        if s in lat.finals:
            lines.append(f"{s} {sum(lat.finals[s]):.9g}")
        if not lines:  # start state with neither arcs nor final weight: nothing can be decoded
            return ""
    return "\n".join(lines) + "\n"


def distinct_word_sequences(lat: RawLattice, n: int, beam: float) -> list[tuple[tuple[int, ...], float]]:
    """The ``n`` best distinct word sequences of the lattice with their total cost, best first.

    Args:
        lat: the lattice.
        n: how many sequences.
        beam: pruning beam of the epsilon removal and determinization (cost units).

    Returns:
        ``[(word ids, graph + acoustic cost)]``, best (lowest cost) first.
    """
    import kaldifst

    text = _word_acceptor_text(lat)
    if not text:
        return []
    fst = kaldifst.compile(text, acceptor=False)
    kaldifst.rmepsilon(fst, weight=str(beam))
    if fst.num_states == 0:
        return []
    det = kaldifst.determinize(fst, weight=str(beam))
    paths = kaldifst.convert_nbest_to_vector(kaldifst.shortest_path(det, n=n))
    out = []
    for p in paths:
        ok, ilabels, _, weight = kaldifst.get_linear_symbol_sequence(p)
        if ok:
            out.append((tuple(int(x) for x in ilabels), float(weight.value)))
    out.sort(key=lambda x: x[1])
    return out


def split_scores(lat: RawLattice, sequences: Sequence[tuple[int, ...]]) -> list[tuple[float, float] | None]:
    """For each word sequence, the (graph, acoustic) costs of its best path through the lattice.

    Args:
        lat: the lattice (acyclic).
        sequences: word-id sequences read off the lattice.

    Returns:
        ``(graph cost, acoustic cost)`` per sequence, or ``None`` where the lattice has no such path.

    Raises:
        ValueError: the lattice has a cycle.
    """
    children: list[dict[int, int]] = [{}]
    terminal: dict[int, int] = {}
    for k, seq in enumerate(sequences):
        node = 0
        for w in seq:
            nxt = children[node].get(w)
            if nxt is None:
                nxt = len(children)
                children.append({})
                children[node][w] = nxt
            node = nxt
        terminal[node] = k
    best: list[dict[int, tuple[float, float, float]] | None] = [None] * len(lat.arcs)
    best[lat.start] = {0: (0.0, 0.0, 0.0)}
    result: list[tuple[float, float, float] | None] = [None] * len(sequences)
    for s in _topological_order(lat):
        cur = best[s]
        if not cur:
            continue
        arcs = lat.arcs[s]
        for d, o, g, a in zip(
            arcs["next"].tolist(), arcs["olabel"].tolist(), arcs["graph"].tolist(), arcs["acoustic"].tolist()
        ):
            dst = best[d]
            if dst is None:
                dst = best[d] = {}
            for node, (t, gg, aa) in cur.items():
                nn = node if o == 0 else children[node].get(o)
                if nn is None:
                    continue
                nt = t + g + a
                old = dst.get(nn)
                if old is None or nt < old[0]:
                    dst[nn] = (nt, gg + g, aa + a)
        if s in lat.finals:
            fg, fa = lat.finals[s]
            for node, (t, gg, aa) in cur.items():
                k = terminal.get(node)
                if k is not None and (result[k] is None or t + fg + fa < result[k][0]):
                    result[k] = (t + fg + fa, gg + fg, aa + fa)
        best[s] = None  # acyclic: never needed again
    return [None if r is None else (r[1], r[2]) for r in result]


def lattice_word_nbest(
    lattice, n: int, lattice_beam: float, acoustic_scale: float, words_to_text: Callable[[Sequence[int]], str]
) -> list[Hypothesis]:
    """Distinct word sequences of a raw ``kaldifst.Lattice``, best first, within ``lattice_beam`` of the best.

    Args:
        lattice: the raw lattice of ``LatticeSimpleDecoder.get_raw_lattice`` (acoustic costs already scaled).
        n: the most sequences to return (``nbest``).
        lattice_beam: keep sequences within this cost of the best.
        acoustic_scale: the scale the acoustic costs carry, divided out of ``ac``.
        words_to_text: word ids -> sentence.

    Returns:
        Hypotheses with ``lm = -graph``, ``ac = -acoustic / acoustic_scale`` and
        ``total = acoustic_scale * ac + lm`` (spec §4.4), best first; ``[]`` if the lattice is empty.
    """
    lat = read_lattice(lattice)
    seqs = distinct_word_sequences(lat, n, lattice_beam)
    if not seqs:
        return []
    splits = split_scores(lat, [s for s, _ in seqs])
    hyps: list[tuple[float, Hypothesis]] = []
    for (seq, _), split in zip(seqs, splits):
        if split is None:  # cannot happen for a sequence read off the lattice; keep the list consistent
            continue
        g, a = split
        hyps.append((g + a, Hypothesis(words_to_text(seq), ac=-a / acoustic_scale, lm=-g, total=-(g + a),
                                        words=seq)))
    if not hyps:
        return []
    hyps.sort(key=lambda x: x[0])
    best = hyps[0][0]
    return [h for cost, h in hyps if cost <= best + lattice_beam]
