"""The original's n-best augmentation (spec §4.8): single-word swaps between the top candidates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nejm_b2txt_utils.hypothesis import Hypothesis


def substitution_positions(cue: list[str], output: list[str]) -> list[int]:
    """Positions in ``output`` that a Levenshtein alignment against ``cue`` marks as substitutions.

    Same alignment as the original's ``get_string_differences`` (ties: insertion, then deletion,
    then substitution; equal words always match diagonally).

    Args:
        cue: the other sentence's words.
        output: this sentence's words.

    Returns:
        Indices into ``output``, ascending.
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
                        new.append(Hypothesis(sent, ac, lm, total=acoustic_scale * ac + lm))
    items.extend(new)
    return [items[i] for i in _descending([h.total for h in items])]
