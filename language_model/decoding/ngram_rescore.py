"""``--rescore``: swap the pruned n-gram score of each n-best sentence for the unpruned one (spec §4.6).

The original composed the lattice with ``G.fst`` (scale -1) and ``G_no_prune.fst`` (scale +1),
Kaldi's ``lattice-lmrescore``; kaldifst has no lattice composition, so this does the same per
n-best entry (spec §9.5.3): ``lm_new = lm_old + G(words) - G_no_prune(words)``, where ``G(words)``
is the tropical (best-path) cost of the word sequence through the grammar FST, taking ``#0``
backoff arcs as epsilons and including the final (``</s>``) weight, exactly what the composition
computes for one path. Entries keep their acoustic score; the list is re-sorted.

With an n-gram store in the LM folder (``ngram_store/``, :mod:`language_model.ngram.store`; made once by
``convert_lm.py`` from the unpruned ARPA or ``G_no_prune.fst``) the new score is the full LM's exact ARPA score
read from the memory-mapped store (:class:`StoreTarget`), for ``rescore`` and ``exact_ngram`` alike, and
``G_no_prune.fst`` is not needed: the two-pass design of a real-size LM (first pass over the pruned TLG, the
n-best scored exactly with the full LM, which is never loaded whole).

Fixed: the original crashed (null pointers) when ``G_no_prune.fst`` was missing; here the server
refuses to start with ``--rescore`` (or rejects the update) with a message naming the missing file.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from pathlib import Path

import numpy as np

from language_model.graph.fst_io import read_fst
from language_model.ngram.store import LN10, NgramStore, StoreError
from nejm_b2txt_utils.hypothesis import Hypothesis

STORE_DIR = "ngram_store"  # the store's folder inside an LM folder

log = logging.getLogger(__name__)


_ILABEL_SORTED = 0x10000000  # OpenFST kILabelSorted
_BIG_STATE = 64  # states with more arcs are searched per label instead of read whole (the unigram state: 126k)


class _SortedArcs:
    """The word arcs of one ilabel-sorted state, found by binary search (``get`` like a dict of word -> arcs)."""

    def __init__(self, fst, state: int):
        import kaldifst

        self.it = kaldifst.ArcIterator(fst, state)
        self.n = fst.num_arcs(state)
        self.found: dict[int, list[tuple[int, float]]] = {}

    def _ilabel(self, k: int) -> int:
        self.it.seek(k)
        return self.it.value.ilabel

    def arcs(self, label: int) -> list[tuple[int, float, int]]:
        """``(next state, weight, olabel)`` of the arcs whose ilabel is ``label``."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._ilabel(mid) < label:
                lo = mid + 1
            else:
                hi = mid
        out = []
        while lo < self.n:
            self.it.seek(lo)
            arc = self.it.value
            if arc.ilabel != label:
                break
            out.append((arc.nextstate, float(arc.weight.value), arc.olabel))
            lo += 1
        return out

    def get(self, word: int, default=()):
        """The ``(next state, weight)`` arcs of ``word`` (ilabel = olabel = word), or ``default``."""
        got = self.found.get(word)
        if got is None:
            got = self.found[word] = [(d, w) for d, w, o in self.arcs(word) if o == word]
        return got or default


class GrammarFst:
    """Best-path cost of word sequences through a ``G.fst`` (word acceptor with epsilon/``#0`` backoff)."""

    def __init__(self, path: str | os.PathLike, backoff_label: int | None = None):
        """Load a grammar FST.

        Args:
            path: ``G.fst`` or ``G_no_prune.fst``.
            backoff_label: the id of ``#0`` (its arcs are taken as epsilons), if any.

        Raises:
            FileNotFoundError: no such file.
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"grammar FST not found: {self.path}")
        self.fst = read_fst(self.path)  # a truncated file: one clear error at start-up, not at every finalize
        self.backoff_label = backoff_label
        self._cache: dict[int, tuple] = {}
        self._ilabel_sorted = bool(self.fst.properties(_ILABEL_SORTED, True))

    def _state(self, s: int):
        got = self._cache.get(s)
        if got is None:
            import kaldifst

            if self._ilabel_sorted and self.fst.num_arcs(s) > _BIG_STATE:  # the unigram state: ~all words
                got = self._cache[s] = self._big_state(s)
                return got
            words: dict[int, list[tuple[int, float]]] = {}
            eps: list[tuple[int, float]] = []
            for arc in kaldifst.ArcIterator(self.fst, s):
                w = float(arc.weight.value)
                if arc.olabel == 0 or arc.olabel == self.backoff_label:
                    eps.append((arc.nextstate, w))
                else:
                    words.setdefault(arc.olabel, []).append((arc.nextstate, w))
            final = float(self.fst.final(s).value)
            got = self._cache[s] = (words, eps, final)
        return got

    def _big_state(self, s: int):
        """A state with many arcs, read on demand: binary search over its ilabel-sorted arcs, per label."""
        lookup = _SortedArcs(self.fst, s)
        eps = [(d, w) for label in {0, self.backoff_label} - {None} for d, w, o in lookup.arcs(label)
               if o == 0 or o == self.backoff_label]
        return lookup, eps, float(self.fst.final(s).value)

    def _closure(self, frontier: dict[int, float]) -> dict[int, float]:
        best = dict(frontier)
        heap = [(c, s) for s, c in frontier.items()]
        heapq.heapify(heap)
        while heap:
            c, s = heapq.heappop(heap)
            if c > best.get(s, math.inf):
                continue
            for nxt, w in self._state(s)[1]:
                if c + w < best.get(nxt, math.inf):
                    best[nxt] = c + w
                    heapq.heappush(heap, (c + w, nxt))
        return best

    def cost(self, word_ids) -> float:
        """Tropical cost of a word sequence.

        Args:
            word_ids: ids in ``words.txt``.

        Returns:
            ``-ln P`` (nats) of the sentence including ``</s>``; ``inf`` if G rejects it.
        """
        frontier = {self.fst.start: 0.0}
        for w in word_ids:
            nxt: dict[int, float] = {}
            for s, c in self._closure(frontier).items():
                for d, wt in self._state(s)[0].get(w, ()):
                    if c + wt < nxt.get(d, math.inf):
                        nxt[d] = c + wt
            if not nxt:
                return math.inf
            frontier = nxt
        return min((c + self._state(s)[2] for s, c in self._closure(frontier).items()), default=math.inf)


    def _backoff(self, s: int) -> tuple[int, float] | None:
        eps = self._state(s)[1]
        return eps[0] if eps else None

    def exact_cost(self, word_ids) -> float:
        """The ARPA's own cost of a word sequence: at each state the explicit n-gram if there is one, else the
        backoff arc and retry (failure semantics), as an ARPA reader (KenLM, SRILM) scores it.

        :meth:`cost` instead takes the cheapest path with backoff arcs as epsilons, which is what the search
        and Kaldi's composition compute: where a backoff weight exceeds 1 (negative backoff cost) or a
        lower-order estimate beats the discounted explicit one, that path is cheaper than the ARPA allows.
        ``exact_cost(w) >= cost(w)`` always.

        Args:
            word_ids: ids in ``words.txt``.

        Returns:
            ``-ln P`` (nats) including ``</s>``; ``inf`` if a word is not in the grammar.
        """
        s, total = self.fst.start, 0.0
        for w in word_ids:
            while True:
                arcs = self._state(s)[0].get(w)
                if arcs:
                    s, wt = min(arcs, key=lambda a: a[1])
                    total += wt
                    break
                bo = self._backoff(s)
                if bo is None:
                    return math.inf
                s, total = bo[0], total + bo[1]
        while True:
            final = self._state(s)[2]
            if math.isfinite(final):
                return total + final
            bo = self._backoff(s)
            if bo is None:
                return math.inf
            s, total = bo[0], total + bo[1]

    def exact_costs(self, sentences) -> np.ndarray:
        """:meth:`exact_cost` of each word-id sequence.

        Args:
            sentences: word-id sequences (``words.txt`` ids).

        Returns:
            float64 [len(sentences)] ``-ln P`` (nats), ``inf`` where a word is not in the grammar.
        """
        return np.array([self.exact_cost(w) for w in sentences], dtype=np.float64)


def check_store_vocabulary(path, store_vocab: list[str], words: list[str]) -> None:
    """The store and ``words.txt`` must name the same words (reserved symbols ``<...>``/``#...`` aside).

    Args:
        path: the store folder (for the message).
        store_vocab: the store's ``vocab.txt``.
        words: ``words.txt`` by id.

    Raises:
        StoreError: more than 1 % of either side's words are missing from the other.
    """
    def plain(ws):
        return {w for w in ws if not (w.startswith("<") or w.startswith("#"))}

    ours, theirs = plain(words), plain(store_vocab)
    lacking, extra = sorted(ours - theirs), sorted(theirs - ours)
    if len(lacking) > 0.01 * max(len(ours), 1) or len(extra) > 0.01 * max(len(theirs), 1):
        raise StoreError(f"{Path(path) / 'vocab.txt'}: {len(theirs)} words, of which {len(extra)} are not in "
                         f"words.txt, which has {len(lacking)} of its {len(ours)} words missing here (e.g. "
                         f"{(lacking or extra)[0]!r}); expected the store of this LM folder's LM")
    if lacking or extra:
        log.warning("%s: %d words of words.txt are not in the store (they score as <unk>, e.g. %r) and %d store "
                    "words are not in words.txt", path, len(lacking), (lacking or [""])[0], len(extra))


class StoreTarget:
    """Exact ARPA costs of ``words.txt`` id sequences from the LM folder's n-gram store (all at once)."""

    def __init__(self, path, words: list[str]):
        """Open (and check) the store; map ``words.txt`` ids to store ids once.

        Args:
            path: the store folder.
            words: ``words.txt`` by id (a word the store lacks scores as its ``<unk>``).

        Raises:
            StoreError: the store is incomplete, truncated or foreign (one line naming the file), or its
                vocabulary is not ``words.txt``'s (more than 1 % of either's words missing from the other: a store
                of another LM, which scored silently before); fewer differences are logged as a warning.
        """
        self.store = NgramStore(path)
        self.to_store = self.store.map_symbols(words)  # [len(words)] store id of each words.txt id
        check_store_vocabulary(path, self.store.vocab, words)

    def exact_costs(self, sentences) -> np.ndarray:
        """``-ln P`` of each sentence including ``</s>``: one vectorised trie lookup for the whole batch.

        Args:
            sentences: word-id sequences (``words.txt`` ids).

        Returns:
            float64 [len(sentences)] nats.
        """
        ids = [self.to_store[np.asarray(w, dtype=np.int64)] for w in sentences]
        return -LN10 * self.store.score_ids(ids)


def exact_rescore(grammar: GrammarFst, nbest: list[Hypothesis], acoustic_scale: float,
                  target: GrammarFst | StoreTarget | None = None) -> list[Hypothesis]:
    """Swap each hypothesis' search-time n-gram score (best path through the backoff epsilons) for the
    ARPA's exact one: ``lm_new = lm + grammar.cost(words) - target.exact_cost(words)``.

    This is an exact rescoring pass rather than a different G: an exact G needs failure (phi) arcs, which the
    Kaldi decoder cannot follow, and capping backoff weights would change the model. The search stays
    optimistic (never pessimistic), so the pass can only lower scores, and no word sequence leaves
    finalize scored better than its ARPA probability.

    Args:
        grammar: the ``G.fst`` the decoding graph was built from.
        nbest: hypotheses with word ids.
        acoustic_scale: weight of ``ac`` in the new totals.
        target: the LM whose exact score is wanted (``G_no_prune.fst`` for ``rescore``, or the LM folder's n-gram
            store); default ``grammar``.

    Returns:
        New hypotheses (``lm`` changed where both grammars accept the words), best first.
    """
    target = target or grammar
    out = []
    new_costs = target.exact_costs([h.words for h in nbest])
    for h, new in zip(nbest, new_costs.tolist()):
        old = grammar.cost(h.words)
        lm = h.lm + old - new if math.isfinite(old) and math.isfinite(new) else h.lm
        out.append(Hypothesis(h.sentence, h.ac, lm, words=h.words).ngram_scored(acoustic_scale))
    out.sort(key=lambda h: -h.total)
    return out


class NgramRescorer:
    """The pruned grammar of one LM folder (``G.fst``) and its unpruned LM: the n-gram store if the folder has
    one (``ngram_store/``), else ``G_no_prune.fst``."""

    def __init__(self, lm_path: str | os.PathLike, words: list[str], store: StoreTarget | None = None):
        """Load both LMs of an LM folder.

        Args:
            lm_path: the LM folder.
            words: ``words.txt`` by id (for the ``#0`` backoff label).
            store: the folder's opened store (shared with ``exact_ngram``), if it has one.

        Raises:
            FileNotFoundError: ``G.fst`` is missing, or ``G_no_prune.fst`` without a store (the message says how
                to build it).
        """
        lm_path = Path(lm_path)
        needed = ("G.fst",) if store is not None else ("G.fst", "G_no_prune.fst")
        missing = [n for n in needed if not (lm_path / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"--rescore needs {' and '.join(missing)} in {lm_path} (build_lm.py writes G_no_prune.fst "
                "when given an unpruned ARPA; or convert_lm.py writes an ngram_store/ from it)"
            )
        backoff = words.index("#0") if "#0" in words else None
        self.old = GrammarFst(lm_path / "G.fst", backoff)
        self.store = store
        self.new = GrammarFst(lm_path / "G_no_prune.fst", backoff) if store is None else None

    def rescore(self, nbest: list[Hypothesis], acoustic_scale: float, exact: bool = False) -> list[Hypothesis]:
        """Swap each hypothesis' pruned n-gram score for the unpruned one.

        Args:
            nbest: hypotheses with word ids (``words``).
            acoustic_scale: weight of ``ac`` in the new totals.
            exact: the unpruned grammar's exact ARPA score (:func:`exact_rescore`) instead of its best path
                through the backoff epsilons (the original's composition); always exact with a store.

        Returns:
            New hypotheses (``lm`` changed where both grammars accept the words, ``total`` recomputed), best
            first.
        """
        if exact or self.store is not None:
            return exact_rescore(self.old, nbest, acoustic_scale, self.store or self.new)
        out = []
        for h in nbest:
            old, new = self.old.cost(h.words), self.new.cost(h.words)
            lm = h.lm
            if math.isfinite(old) and math.isfinite(new):
                lm = h.lm + old - new
            else:
                log.warning(
                    "rescore: %r not accepted by %s; keeping its score",
                    h.sentence,
                    "G.fst" if not math.isfinite(old) else "G_no_prune.fst",
                )
            out.append(Hypothesis(h.sentence, h.ac, lm, words=h.words).ngram_scored(acoustic_scale))
        out.sort(key=lambda h: -h.total)
        return out
