"""Word-level n-best from a raw Kaldi lattice (the first decoding stage after the WFST search).

``lattice_word_nbest`` replaces Kaldi's ``GetLattice`` (word determinization with
``DeterminizeLatticePruned``) + ``ShortestPath(n)`` + ``ConvertNbestToVector``, which kaldi-decoder
does not expose (spec §4.4, §9.2 d, §9.5.2):
  1. read the raw lattice's arcs exactly (OpenFST binary form; the text form rounds to 6 digits);
  2. build a tropical acceptor on word labels with weight graph + acoustic and remove its epsilons,
     pruned at ``lattice_beam``;
  3. OpenFST's ``ShortestPath(n, unique)`` lists the best ``n`` distinct word sequences, determinizing
     lazily only what the search reaches (a full pruned determinization first gives the same list but
     can take a minute on an ambiguous lattice);
  4. a Viterbi pass over lattice x (trie of those sequences) recovers, for each sequence, the
     (graph, acoustic) split of its best alignment, which is what Kaldi's determinization keeps;
  5. sequences worse than best + ``lattice_beam`` are dropped (Kaldi's pruned determinization does that).

Bounded work (added): a lattice of more than ``max_arcs`` arcs (ambiguous logits: an early checkpoint's
near-uniform output made lattices of 65k arcs whose n-best took minutes) is first cut to about ``max_arcs`` arcs by
:func:`cap_lattice`: the arcs on the best paths (forward-backward slack), which narrows the lattice beam to what
those arcs span; steps 2-5 then run on it at that beam.

With ``nbest == 1`` none of this runs: the best path of the lattice pass (:func:`best_path_hypothesis`) is
the best word sequence, and its (graph, acoustic) split is that path's own. Step 2 writes the acceptor
in OpenFST's binary form from arrays (no text round trip); step 4 first drops the arcs that lie on no
path within ``lattice_beam`` of the best (forward-backward), which no kept sequence can use.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from language_model.decoding.native_calls import native_call
from nejm_b2txt_utils.hypothesis import Hypothesis

_FST_MAGIC = 2125659606
_ARC = np.dtype(
    [("ilabel", "<i4"), ("olabel", "<i4"), ("graph", "<f4"), ("acoustic", "<f4"), ("next", "<i4")]
)


@dataclass
class RawLattice:
    """A Kaldi ``Lattice`` as plain arrays: all arcs state by state, and each final (graph, acoustic) weight."""

    start: int
    flat: np.ndarray  # [A] structured _ARC, the arcs of state s are flat[offsets[s]:offsets[s + 1]]
    offsets: np.ndarray  # [S + 1] int64
    finals: dict[int, tuple[float, float]]

    @property
    def num_states(self) -> int:
        """The number of states ``S``."""
        return len(self.offsets) - 1

    @property
    def arcs(self) -> list[np.ndarray]:
        """Per state, a view of its arcs (structured ``_ARC``)."""
        o = self.offsets.tolist()
        return [self.flat[o[s] : o[s + 1]] for s in range(self.num_states)]


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
    chunks: list[bytes] = []
    counts = np.zeros(n_states, dtype=np.int64)
    finals: dict[int, tuple[float, float]] = {}
    for s in range(n_states):
        fg, fa, n = struct.unpack_from("<ffq", buf, pos)
        pos += 16
        if math.isfinite(fg) and math.isfinite(fa):
            finals[s] = (float(fg), float(fa))
        counts[s] = n
        chunks.append(buf[pos : pos + n * _ARC.itemsize])
        pos += n * _ARC.itemsize
    flat = np.frombuffer(b"".join(chunks), dtype=_ARC)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return RawLattice(start=int(start), flat=flat, offsets=offsets, finals=finals)


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


def _arc_lists(lat: RawLattice) -> tuple[list[int], list[int], list[int], list[float], list[float]]:
    """Offsets, next states, output labels, graph and acoustic costs as Python lists (fast to index)."""
    f = lat.flat
    return (lat.offsets.tolist(), f["next"].tolist(), f["olabel"].tolist(), f["graph"].tolist(),
            f["acoustic"].tolist())


def _topological_order(lat: RawLattice) -> list[int]:
    n = lat.num_states
    off, nxt = lat.offsets.tolist(), lat.flat["next"].tolist()
    indeg = np.bincount(lat.flat["next"], minlength=n).tolist()
    order, stack = [], [s for s in range(n) if indeg[s] == 0]
    while stack:
        s = stack.pop()
        order.append(s)
        for d in nxt[off[s] : off[s + 1]]:
            indeg[d] -= 1
            if indeg[d] == 0:
                stack.append(d)
    if len(order) != n:
        raise ValueError("lattice has a cycle; expected an acyclic decoder lattice")
    return order


def _std_fst_bytes(start: int, finals: np.ndarray, offsets: np.ndarray, label: np.ndarray, weight: np.ndarray,
                   dst: np.ndarray) -> bytes:
    """OpenFST binary ``vector`` FST of ``standard`` (tropical) arcs, an acceptor on ``label``.

    Args:
        start: the start state.
        finals: ``[S]`` final cost per state (``inf``: not final).
        offsets: ``[S + 1]``: the arcs of state ``s`` are ``offsets[s]:offsets[s + 1]``.
        label, weight, dst: ``[A]`` arcs, state by state.

    Returns:
        The file's bytes (what ``StdVectorFst.write`` writes; properties: expanded, mutable only).
    """
    n_states, n_arcs = len(finals), len(label)
    head = struct.pack("<i", _FST_MAGIC)
    for text in ("vector", "standard"):
        head += struct.pack("<i", len(text)) + text.encode("ascii")
    head += struct.pack("<iiQqqq", 2, 0, 0x3, start, n_states, n_arcs)  # version 2, no flags, kExpanded|kMutable
    counts = np.diff(offsets)
    std = np.zeros(n_arcs, dtype=[("ilabel", "<i4"), ("olabel", "<i4"), ("weight", "<f4"), ("next", "<i4")])
    std["ilabel"], std["olabel"], std["weight"], std["next"] = label, label, weight, dst
    state = np.zeros(n_states, dtype=[("final", "<f4"), ("n", "<i8")])
    state["final"], state["n"] = finals, counts
    parts, std_bytes, state_bytes = [head], std.tobytes(), state.tobytes()
    off = (offsets * std.itemsize).tolist()
    for s in range(n_states):
        parts.append(state_bytes[12 * s : 12 * s + 12])
        parts.append(std_bytes[off[s] : off[s + 1]])
    return b"".join(parts)


def _word_acceptor(lat: RawLattice):
    """``pywrapfst.VectorFst``: tropical acceptor on output (word) labels, weight = graph + acoustic.

    Args:
        lat: the lattice.

    Returns:
        The acceptor (OpenFST binary form built from the arrays and read from memory: no temporary file).
    """
    import pywrapfst

    finals = np.full(lat.num_states, np.inf)
    for s, (g, a) in lat.finals.items():
        finals[s] = g + a
    arcs = lat.flat
    weight = arcs["graph"].astype(np.float64) + arcs["acoustic"]
    return pywrapfst.Fst.read_from_string(_std_fst_bytes(lat.start, finals, lat.offsets, arcs["olabel"], weight,
                                                         arcs["next"]))


def _linear_paths(paths) -> list[tuple[tuple[int, ...], float]]:
    """The label sequences and costs of an FST made of linear paths from the start (``shortestpath``'s output).

    Args:
        paths: a ``pywrapfst`` FST whose start state has one arc per path, each followed by a chain.

    Returns:
        ``[(labels without epsilons, cost)]`` in the FST's arc order.
    """
    out = []
    start = paths.start()
    if start < 0:
        return out
    for arc in paths.arcs(start):
        labels, cost, state = [arc.olabel] if arc.olabel else [], float(arc.weight), arc.nextstate
        while paths.num_arcs(state):
            nxt = next(iter(paths.arcs(state)))
            cost += float(nxt.weight)
            if nxt.olabel:
                labels.append(nxt.olabel)
            state = nxt.nextstate
        out.append((tuple(labels), cost + float(paths.final(state))))
    return out


def distinct_word_sequences(lat: RawLattice, n: int, beam: float) -> list[tuple[tuple[int, ...], float]]:
    """The ``n`` best distinct word sequences of the lattice within ``beam`` of the best, with their total cost.

    OpenFST's n-shortest distinct strings (``ShortestPath`` with ``unique``, from ``pynini``'s ``pywrapfst``)
    over the word acceptor after a pruned epsilon removal: the determinization it needs is done lazily, only
    for the states the n-best search reaches. A full pruned determinization first (this function's earlier
    form, Kaldi's ``DeterminizeLatticePruned`` plays that role in the original) gives the same sequences
    but blows up on ambiguous input: on the 126k-word 1-gram's lattices of noisy logits (``benchmarks/
    lm_decode_latency.py``) some utterances took tens of seconds in it; the lazy search lists the same
    sequences (tests compare it with a full determinization and a brute-force reference).

    Args:
        lat: the lattice.
        n: how many sequences.
        beam: pruning beam of the epsilon removal and of the search (cost units).

    Returns:
        ``[(word ids, graph + acoustic cost)]``, best (lowest cost) first; ties keep OpenFST's order.
    """
    import pywrapfst

    if lat.num_states == 0 or (lat.offsets[lat.start] == lat.offsets[lat.start + 1] and lat.start not in lat.finals):
        return []
    acceptor = _word_acceptor(lat)
    with native_call():
        acceptor.rmepsilon(weight=beam)  # pruned at the search's width (and it connects: no dead states)
        if acceptor.num_states() == 0:
            return []
        best = pywrapfst.shortestpath(acceptor, nshortest=n, unique=True, weight=beam)
    out = _linear_paths(best)
    out.sort(key=lambda x: x[1])
    return out


def _path_slack(lat: RawLattice, order: list[int]) -> np.ndarray:
    """Per arc (flat order), the cost of the best complete path through it minus the best path's (forward-backward).

    Returns:
        ``[A]`` float64, ``>= 0`` up to float32 rounding; ``inf`` for arcs on no complete path.
    """
    off, nxt, _, gr, ac = _arc_lists(lat)
    cost = [g + a for g, a in zip(gr, ac)]
    inf = math.inf
    alpha = [inf] * lat.num_states
    alpha[lat.start] = 0.0
    for s in order:
        a0 = alpha[s]
        if a0 == inf:
            continue
        for k in range(off[s], off[s + 1]):
            c = a0 + cost[k]
            if c < alpha[nxt[k]]:
                alpha[nxt[k]] = c
    beta = [inf] * lat.num_states
    for s, (g, a) in lat.finals.items():
        beta[s] = g + a
    for s in reversed(order):
        b = beta[s]
        for k in range(off[s], off[s + 1]):
            c = cost[k] + beta[nxt[k]]
            if c < b:
                b = c
        beta[s] = b
    src = np.repeat(np.arange(lat.num_states), np.diff(lat.offsets))
    with np.errstate(invalid="ignore"):
        slack = np.asarray(alpha)[src] + np.asarray(cost) + np.asarray(beta)[np.asarray(nxt, dtype=np.int64)]
        slack = slack - beta[lat.start]
    return np.where(np.isnan(slack), np.inf, slack)


def cap_lattice(lat: RawLattice, max_arcs: int, beam: float) -> tuple[RawLattice, float]:
    """At most about ``max_arcs`` arcs: those on the best complete paths (a narrower lattice beam).

    Args:
        lat: the lattice (acyclic).
        max_arcs: the arc budget (arcs tied at the cut are all kept).
        beam: the lattice beam the caller would use (cost units).

    Returns:
        ``(lattice, beam)``: ``lat`` and ``beam`` unchanged when it has at most ``max_arcs`` arcs; else the arcs
        whose best complete path is within ``b`` of the best one, ``b = min(beam, the max_arcs-th smallest
        slack)``, and ``b`` (every path within ``b`` of the best survives whole).

    Raises:
        ValueError: the lattice has a cycle.
    """
    if len(lat.flat) <= max_arcs:
        return lat, beam
    slack = _path_slack(lat, _topological_order(lat))
    finite = np.sort(slack[np.isfinite(slack)])
    if finite.size == 0:
        return lat, beam
    cut = min(beam, float(finite[min(max_arcs, finite.size) - 1]))
    keep = slack <= cut + 1e-3 * (1.0 + cut)  # the tolerance of split_scores: a kept path keeps all its arcs
    src = np.repeat(np.arange(lat.num_states), np.diff(lat.offsets))  # [A] source state of each arc
    counts = np.bincount(src[keep], minlength=lat.num_states)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return RawLattice(start=lat.start, flat=lat.flat[keep], offsets=offsets, finals=lat.finals), cut


def split_scores(lat: RawLattice, sequences: Sequence[tuple[int, ...]],
                 beam: float | None = None) -> list[tuple[float, float] | None]:
    """For each word sequence, the (graph, acoustic) costs of its best path through the lattice.

    Args:
        lat: the lattice (acyclic).
        sequences: word-id sequences read off the lattice.
        beam: when given, only arcs on paths within this cost of the lattice's best are followed (exact for
            sequences whose best path lies within it, e.g. those of :func:`distinct_word_sequences` at this beam).

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
    order = _topological_order(lat)
    keep = None
    if beam is not None:  # float32 sums in other orders: a tolerance, never drop a kept path's arc
        keep = (_path_slack(lat, order) <= beam + 1e-3 * (1.0 + beam)).tolist()
    off, nxt, olab, gr, ac = _arc_lists(lat)
    best: list[dict[int, tuple[float, float, float]] | None] = [None] * lat.num_states
    best[lat.start] = {0: (0.0, 0.0, 0.0)}
    result: list[tuple[float, float, float] | None] = [None] * len(sequences)
    for s in order:
        cur = best[s]
        if not cur:
            continue
        for k in range(off[s], off[s + 1]):
            if keep is not None and not keep[k]:
                continue
            d, o, g, a = nxt[k], olab[k], gr[k], ac[k]
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


def best_path_hypothesis(path, acoustic_scale: float,
                         words_to_text: Callable[[Sequence[int]], str]) -> list[Hypothesis]:
    """The 1-best without determinization: a linear lattice (``get_best_path``) as one hypothesis.

    The best path carries the best word sequence, and no other path of that sequence is cheaper, so its
    (graph, acoustic) split is what :func:`lattice_word_nbest` reports for ``n = 1`` (up to exact ties).

    Args:
        path: a linear ``kaldifst.Lattice`` (acoustic costs scaled by ``acoustic_scale``).
        acoustic_scale: divided out of ``ac``.
        words_to_text: word ids -> sentence.

    Returns:
        ``[Hypothesis]`` (``lm = -graph``, ``ac = -acoustic / acoustic_scale``), or ``[]`` for an empty path.
    """
    import kaldifst

    if path.num_states == 0:
        return []
    ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(path)
    if not ok or not math.isfinite(weight.value1 + weight.value2):
        return []
    g, a = float(weight.value1), float(weight.value2)
    seq = tuple(int(x) for x in olabels)
    return [Hypothesis(words_to_text(seq), ac=-a / acoustic_scale, lm=-g, total=-(g + a), words=seq)]


def lattice_word_nbest(
    lattice, n: int, lattice_beam: float, acoustic_scale: float, words_to_text: Callable[[Sequence[int]], str],
    max_arcs: int | None = None,
) -> list[Hypothesis]:
    """Distinct word sequences of a raw ``kaldifst.Lattice``, best first, within ``lattice_beam`` of the best.

    Args:
        lattice: the raw lattice of ``LatticeSimpleDecoder.get_raw_lattice`` (acoustic costs already scaled), or
            it read with :func:`read_lattice`.
        n: the most sequences to return (``nbest``).
        lattice_beam: keep sequences within this cost of the best.
        acoustic_scale: the scale the acoustic costs carry, divided out of ``ac``.
        words_to_text: word ids -> sentence.
        max_arcs: a larger lattice is first cut to about this many arcs (:func:`cap_lattice`; the beam narrows
            to what they span); ``None``: no cap.

    Returns:
        Hypotheses with ``lm = -graph``, ``ac = -acoustic / acoustic_scale`` and
        ``total = acoustic_scale * ac + lm`` (spec §4.4), best first; ``[]`` if the lattice is empty.
    """
    if n == 1:
        import kaldifst

        return best_path_hypothesis(kaldifst.shortest_path(lattice, n=1), acoustic_scale, words_to_text)
    lat = lattice if isinstance(lattice, RawLattice) else read_lattice(lattice)
    if max_arcs is not None:
        lat, lattice_beam = cap_lattice(lat, max_arcs, lattice_beam)
    seqs = distinct_word_sequences(lat, n, lattice_beam)
    if not seqs:
        return []
    splits = split_scores(lat, [s for s, _ in seqs], lattice_beam)
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
