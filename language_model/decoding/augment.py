"""The original's n-best augmentation (spec §4.8): single-word swaps between the top candidates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nejm_b2txt_utils.hypothesis import Hypothesis


def _banded_alignment(out: list[str], ref: list[str], band: int) -> tuple[int, list[int], list[list[int]]]:
    """The alignment table of ``out`` against ``ref`` filled only within ``band`` of the diagonal.

    Returns:
        (cost of the whole alignment, or more when the optimal path leaves the band; per row the first
        column held; per row the ops: 0 match, 1 insertion, 2 deletion, 3 substitution).
    """
    n, m = len(out), len(ref)
    inf = n + m + band + 1
    los = [0] * (n + 1)
    costs: list[list[int]] = [list(range(min(m, band) + 1))]
    ops: list[list[int]] = [[0] + [1] * min(m, band)]
    for i in range(1, n + 1):
        lo, hi = max(0, i - band), min(m, i + band)
        plo, prev = los[i - 1], costs[i - 1]
        phi = plo + len(prev) - 1
        row, op = [inf] * max(0, hi - lo + 1), [0] * max(0, hi - lo + 1)
        if lo == 0 and row:
            row[0], op[0] = i, 2
        word = out[i - 1]
        for j in range(max(lo, 1), hi + 1):
            sub = prev[j - 1 - plo] if plo <= j - 1 <= phi else inf
            if word == ref[j - 1]:
                row[j - lo], op[j - lo] = sub, 0
                continue
            ins = row[j - 1 - lo] if j - 1 >= lo else inf
            dele = prev[j - plo] if plo <= j <= phi else inf
            if ins <= dele and ins <= sub:
                row[j - lo], op[j - lo] = ins + 1, 1
            elif dele <= ins and dele <= sub:
                row[j - lo], op[j - lo] = dele + 1, 2
            else:
                row[j - lo], op[j - lo] = sub + 1, 3
        los[i] = lo
        costs.append(row)
        ops.append(op)
    last = costs[n]
    total = last[m - los[n]] if los[n] <= m < los[n] + len(last) else inf
    return total, los, ops


def substitution_positions(cue: list[str], output: list[str]) -> list[int]:
    """Positions in ``output`` that a Levenshtein alignment against ``cue`` marks as substitutions.

    Same alignment as the original's ``get_string_differences`` (ties: insertion, then deletion,
    then substitution; equal words always match diagonally), in O(L * d) time instead of O(L^2) (L words,
    edit distance d). A common prefix and suffix align diagonally (equal words always match). The
    backtrace visits only cells of cost <= d and compares their neighbours (cost <= d + 1), all within
    d + 1 of the diagonal, and a table filled only within a band that wide is exact in those cells; so the
    band starts at 2 and doubles until the alignment's cost is below it (or reaches the Hamming distance
    plus the length difference, a bound of d). The full table made finalize quadratic in the utterance's
    length (n-best augmentation took 34 of 36 s at 6,000 frames).

    Args:
        cue: the other sentence's words.
        output: this sentence's words.

    Returns:
        Indices into ``output``, ascending.
    """
    n, m = len(output), len(cue)
    suffix = 0
    while suffix < min(n, m) and output[n - 1 - suffix] == cue[m - 1 - suffix]:
        suffix += 1
    prefix = 0
    while prefix < min(n, m) - suffix and output[prefix] == cue[prefix]:
        prefix += 1
    out, ref = output[prefix : n - suffix], cue[prefix : m - suffix]
    n, m = len(out), len(ref)
    bound = sum(a != b for a, b in zip(out, ref)) + abs(n - m) + 1  # >= d + 1
    band = min(2, bound)
    while True:
        total, los, ops = _banded_alignment(out, ref, band)
        if total < band or band >= bound:
            break
        band = min(2 * band, bound)
    labels: list[int] = []
    i, j = n, m
    while i > 0 or j > 0:
        o = ops[i][j - los[i]]
        if o == 1:
            j -= 1
            continue  # insertions carry no output word
        labels.append(o)
        if o == 2:
            i -= 1
        else:
            i, j = i - 1, j - 1
    labels.reverse()
    return [prefix + k for k, o in enumerate(labels) if o == 3]


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
    ``score_penalty_percent`` of their magnitude.

    Args:
        nbest: hypotheses (their ``total`` is recomputed here).
        top_candidates_to_augment: how many of the best take part.
        acoustic_scale: weight of ``ac`` in the total.
        score_penalty_percent: penalty of new sentences, a fraction of their scores' magnitude.

    Returns:
        The stripped originals plus the new sentences, ``total = acoustic_scale*ac + lm``, best first.
    """
    items = [Hypothesis(h.sentence.strip(), float(h.ac), float(h.lm), total=h.ngram_total(acoustic_scale),
                        words=h.words) for h in nbest]
    items = [items[i] for i in _descending([h.total for h in items])]
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
                        new.append(Hypothesis(sent, ac, lm).ngram_scored(acoustic_scale))
    items.extend(new)
    return [items[i] for i in _descending([h.total for h in items])]
