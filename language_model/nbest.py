"""Word-level n-best from a raw Kaldi lattice, and the original's n-best augmentation.

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

``augment_nbest`` is the original's single-word-swap augmentation (spec §4.8).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

_FST_MAGIC = 2125659606
_ARC = np.dtype(
    [("ilabel", "<i4"), ("olabel", "<i4"), ("graph", "<f4"), ("acoustic", "<f4"), ("next", "<i4")]
)


@dataclass
class Hypothesis:
    """One candidate sentence with its scores in nats: ``ac`` unscaled acoustic, ``lm`` n-gram (+ lexicon)."""

    sentence: str
    ac: float
    lm: float
    words: tuple[int, ...] = field(default=(), compare=False)

    def total(self, acoustic_scale: float) -> float:
        return acoustic_scale * self.ac + self.lm


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
    """Parse an OpenFST binary ``vector`` FST with ``lattice4`` arcs (what ``Lattice.write`` produces)."""
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
    """A ``kaldifst.Lattice`` -> :class:`RawLattice` with exact float32 weights."""
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
    """The ``n`` best distinct word sequences of the lattice with their total cost, best first."""
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
    """For each word sequence, the (graph, acoustic) costs of its best path through the lattice."""
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

    ``lm = -graph``, ``ac = -acoustic / acoustic_scale`` (spec §4.4).
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
        hyps.append((g + a, Hypothesis(words_to_text(seq), ac=-a / acoustic_scale, lm=-g, words=seq)))
    if not hyps:
        return []
    hyps.sort(key=lambda x: x[0])
    best = hyps[0][0]
    return [h for cost, h in hyps if cost <= best + lattice_beam]


# ---------------------------------------------------------------------------------------- augmentation
def substitution_positions(cue: list[str], output: list[str]) -> list[int]:
    """Positions in ``output`` that a Levenshtein alignment against ``cue`` marks as substitutions.

    Same alignment as the original's ``get_string_differences`` (ties: insertion, then deletion,
    then substitution; equal words always match diagonally).
    """
    n, m = len(output), len(cue)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    op = np.zeros((n + 1, m + 1), dtype=np.int8)  # 0 match, 1 insertion, 2 deletion, 3 substitution
    cost[0, :] = np.arange(m + 1)
    op[0, 1:] = 1
    cost[:, 0] = np.arange(n + 1)
    op[1:, 0] = 2
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if output[i - 1] == cue[j - 1]:
                cost[i, j], op[i, j] = cost[i - 1, j - 1], 0
                continue
            ins, dele, sub = cost[i, j - 1], cost[i - 1, j], cost[i - 1, j - 1]
            if ins <= dele and ins <= sub:
                cost[i, j], op[i, j] = ins + 1, 1
            elif dele <= ins and dele <= sub:
                cost[i, j], op[i, j] = dele + 1, 2
            else:
                cost[i, j], op[i, j] = sub + 1, 3
    labels: list[int] = []
    i, j = n, m
    while i > 0 or j > 0:
        o = op[i, j]
        if o == 1:
            j -= 1
            continue  # insertions carry no output word
        labels.append(o)
        if o == 2:
            i -= 1
        else:
            i, j = i - 1, j - 1
    labels.reverse()
    return [k for k, o in enumerate(labels) if o == 3]


def _descending(totals: list[float]) -> np.ndarray:
    return np.argsort(np.asarray(totals, dtype=np.float64), kind="stable")[::-1]


def augment_nbest(
    nbest: Sequence[Hypothesis],
    top_candidates_to_augment: int = 20,
    acoustic_scale: float = 0.3,
    score_penalty_percent: float = 0.01,
) -> list[Hypothesis]:
    """The original's ``augment_nbest`` (spec §4.8): sort by ``acoustic_scale*ac + lm``; for pairs of
    equal-length sentences among the top ``top_candidates_to_augment``, swap single aligned
    substituted words both ways; new sentences get the pair's mean scores minus
    ``score_penalty_percent`` of their magnitude. Returns everything sorted by total, best first."""
    items = [Hypothesis(h.sentence.strip(), float(h.ac), float(h.lm), h.words) for h in nbest]
    items = [items[i] for i in _descending([h.total(acoustic_scale) for h in items])]
    seen = {h.sentence for h in items}
    new: list[Hypothesis] = []
    limit = min(len(items), top_candidates_to_augment)
    for i1 in range(min(len(items) - 1, top_candidates_to_augment)):
        words1 = items[i1].sentence.split()
        for i2 in range(i1 + 1, limit):
            words2 = items[i2].sentence.split()
            if len(words1) != len(words2):
                continue
            pos1 = substitution_positions(words2, words1)  # positions in sentence 1
            pos2 = substitution_positions(words1, words2)  # positions in sentence 2
            ac = (items[i1].ac + items[i2].ac) / 2
            lm = (items[i1].lm + items[i2].lm) / 2
            ac -= score_penalty_percent * abs(ac)
            lm -= score_penalty_percent * abs(lm)
            for r1, r2 in zip(pos1, pos2):
                swapped1 = words1.copy()
                swapped2 = words2.copy()
                swapped1[r1] = words2[r2]
                swapped2[r2] = words1[r1]
                for sent in (" ".join(swapped1), " ".join(swapped2)):
                    if sent not in seen:
                        seen.add(sent)
                        new.append(Hypothesis(sent, ac, lm))
    items.extend(new)
    return [items[i] for i in _descending([h.total(acoustic_scale) for h in items])]
