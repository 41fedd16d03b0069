"""The 45 real T15 sessions (spec §1.7) and the block plans of the presets tiny/small/full.

Per session the table gives the date, post-implant day and, per split, the CSV's sentence and block
counts. The real per-block corpus of each block is not in the repo, only the sums (spec §1.6), so the
plan assigns corpora to blocks deterministically: a smooth weighted round robin over the blocks of
each split in chronological order (so every era sees every corpus), then moves sentences between
blocks of the same session until the corpus sums equal the CSV's exactly (Train: Switchboard 5,533,
Freq words 1,610, 50-Word 1,091; Val/Test: Switchboard 2,139, Freq words 440, Openwebtext 172,
Harvard 98, Random 79). Block numbers start at 1 per session, Train blocks first, Val/Test last.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

from nejm_b2txt_utils.description_csv import BlockRow, session_to_date

# (session, post-implant day, train sentences, train blocks, val/test sentences, val/test blocks)
SESSION_TABLE: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("t15.2023.08.11", 25, 290, 7, 0, 0), ("t15.2023.08.13", 27, 370, 9, 70, 2),
    ("t15.2023.08.18", 32, 197, 4, 99, 2), ("t15.2023.08.20", 34, 278, 6, 97, 2),
    ("t15.2023.08.25", 39, 89, 2, 50, 1), ("t15.2023.08.27", 41, 150, 3, 50, 1),
    ("t15.2023.09.01", 46, 297, 6, 99, 2), ("t15.2023.09.03", 48, 322, 7, 69, 2),
    ("t15.2023.09.24", 69, 245, 7, 70, 2), ("t15.2023.09.29", 74, 164, 6, 97, 2),
    ("t15.2023.10.01", 76, 258, 6, 89, 2), ("t15.2023.10.06", 81, 176, 5, 73, 2),
    ("t15.2023.10.08", 83, 284, 7, 45, 2), ("t15.2023.10.13", 88, 155, 4, 89, 2),
    ("t15.2023.10.15", 90, 239, 5, 89, 2), ("t15.2023.10.20", 95, 98, 2, 18, 1),
    ("t15.2023.10.22", 97, 179, 5, 80, 2), ("t15.2023.11.03", 109, 149, 3, 100, 2),
    ("t15.2023.11.04", 110, 80, 2, 30, 1), ("t15.2023.11.17", 123, 100, 2, 50, 1),
    ("t15.2023.11.19", 125, 60, 2, 40, 1), ("t15.2023.11.26", 132, 198, 5, 89, 2),
    ("t15.2023.12.03", 139, 228, 5, 68, 2), ("t15.2023.12.08", 144, 199, 6, 100, 2),
    ("t15.2023.12.10", 146, 150, 3, 50, 1), ("t15.2023.12.17", 153, 135, 3, 50, 1),
    ("t15.2023.12.29", 165, 198, 4, 100, 2), ("t15.2024.02.25", 223, 193, 4, 47, 1),
    ("t15.2024.03.03", 230, 219, 5, 0, 0), ("t15.2024.03.08", 235, 163, 4, 49, 1),
    ("t15.2024.03.15", 242, 231, 5, 98, 2), ("t15.2024.03.17", 244, 246, 5, 97, 2),
    ("t15.2024.04.25", 283, 364, 8, 0, 0), ("t15.2024.04.28", 286, 150, 3, 0, 0),
    ("t15.2024.05.10", 298, 110, 3, 50, 1), ("t15.2024.06.14", 333, 80, 3, 50, 1),
    ("t15.2024.07.19", 368, 170, 5, 97, 2), ("t15.2024.07.21", 370, 161, 4, 97, 2),
    ("t15.2024.07.28", 377, 163, 4, 97, 2), ("t15.2025.01.10", 543, 116, 3, 47, 1),
    ("t15.2025.01.12", 545, 168, 4, 95, 2), ("t15.2025.03.14", 606, 59, 3, 50, 2),
    ("t15.2025.03.16", 608, 118, 3, 48, 1), ("t15.2025.03.30", 622, 165, 4, 95, 2),
    ("t15.2025.04.13", 636, 70, 2, 50, 1),
)  # fmt: skip
SESSIONS: tuple[str, ...] = tuple(row[0] for row in SESSION_TABLE)
POST_IMPLANT_DAYS: tuple[int, ...] = tuple(row[1] for row in SESSION_TABLE)

#: Sentences per corpus per split, as summed from the original CSV (spec §1.6).
CORPUS_TOTALS: dict[str, dict[str, int]] = {
    "Train": {"Switchboard": 5533, "Freq words": 1610, "50-Word": 1091},
    "Val/Test": {"Switchboard": 2139, "Freq words": 440, "Openwebtext": 172, "Harvard": 98, "Random": 79},
}
_MIN_BLOCK = 8  # smallest block the corpus balancing leaves


@dataclass(frozen=True)
class Block:
    block_num: int
    corpus: str
    n_sentences: int
    split: str  # "Train" or "Val/Test"


@dataclass(frozen=True)
class SessionPlan:
    index: int  # day index among the 45 real sessions
    session: str
    post_implant_day: int
    blocks: tuple[Block, ...]

    @property
    def date(self) -> str:
        return session_to_date(self.session)

    def csv_rows(self) -> list[BlockRow]:
        return [BlockRow(self.date, self.post_implant_day, b.block_num, b.n_sentences, b.corpus, b.split)
                for b in self.blocks]


@dataclass(frozen=True)
class Preset:
    name: str
    session_indices: tuple[int, ...]
    trials_per_session: int | None  # None: the real counts
    max_train_blocks: int | None = None
    max_valtest_blocks: int | None = None
    max_words: int | None = None  # cap on words per sentence (short trials)
    lm_sentences: int = 40000  # lines of lm_corpus.txt
    #: NeuralParams fields that differ from the defaults (a harder or easier encoding; see ``hard``)
    neural: tuple[tuple[str, float], ...] = ()


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", (0, 22, 44), 20, max_train_blocks=2, max_valtest_blocks=1, max_words=4,
                   lm_sentences=3000),
    "small": Preset("small", (0, 6, 13, 19, 25, 31, 38, 44), 120),
    # the small sessions with a weaker code (modulation depth 0.6 -> 0.4): the small CPU config's greedy
    # val PER lands near the real data's ~10 % instead of small's ~4 % (benchmarks/recipes.py ranks on it)
    "hard": Preset("hard", (0, 6, 13, 19, 25, 31, 38, 44), 120, neural=(("depth", 0.4),)),
    "full": Preset("full", tuple(range(len(SESSION_TABLE))), None),
}

#: One line per preset for ``--help`` (the CLI builds its help from this; a preset without one is a test failure).
PRESET_HELP: dict[str, str] = {
    "tiny": "3 sessions x ~20 short trials",
    "small": "8 sessions x ~120 trials (the demo)",
    "hard": "the small sessions with a weaker neural code (modulation depth 0.4 instead of 0.6; greedy val PER "
            "near the real data's ~10 %%, benchmarks/recipes.py's default)",
    "full": "the 45 real sessions, ~11k trials, ~9 GB",
}


def _round_robin(weights: dict[str, int], n: int) -> list[str]:
    """Smooth weighted round robin: ``n`` labels, each as often as its weight share, evenly spread."""
    total = sum(weights.values())
    current = dict.fromkeys(weights, 0)
    out = []
    for _ in range(n):
        for k, w in weights.items():
            current[k] += w
        best = max(current, key=lambda k: (current[k], -list(weights).index(k)))
        current[best] -= total
        out.append(best)
    return out


def _balance(split: str, blocks: list[list]) -> None:
    """Move sentences between blocks of one session until each corpus sum equals the CSV's.

    ``blocks`` holds ``[session_index, corpus, count]`` lists; session sums never change.
    """
    target = CORPUS_TOTALS[split]
    for _ in range(10000):
        sums = dict.fromkeys(target, 0)
        for _, corpus, count in blocks:
            sums[corpus] += count
        surplus = [c for c in target if sums[c] > target[c]]
        if not surplus:
            assert sums == target, (split, sums)
            return
        deficit = [c for c in target if sums[c] < target[c]]
        # shortest chain of within-session moves surplus -> ... -> deficit (BFS over corpora)
        src = surplus[0]
        prev: dict[str, tuple[str, int, int]] = {}
        queue, seen = deque([src]), {src}
        while queue and not any(d in seen for d in deficit):
            a = queue.popleft()
            for i, (s, ca, n) in enumerate(blocks):
                if ca != a or n <= _MIN_BLOCK:
                    continue
                for j, (s2, cb, _) in enumerate(blocks):
                    if s2 == s and cb not in seen:
                        seen.add(cb)
                        prev[cb] = (a, i, j)
                        queue.append(cb)
        dst = next((d for d in deficit if d in seen), None)
        if dst is None:
            raise RuntimeError(f"cannot balance corpus sums for split {split}: {sums} vs {target}")
        path = []
        node = dst
        while node != src:
            a, i, j = prev[node]
            path.append((i, j))
            node = a
        amount = min(sums[src] - target[src], target[dst] - sums[dst],
                     *(blocks[i][2] - _MIN_BLOCK for i, _ in path))
        for i, j in path:
            blocks[i][2] -= amount
            blocks[j][2] += amount
    raise RuntimeError(f"corpus balancing for split {split} did not converge")


@lru_cache(maxsize=1)
def full_plan() -> tuple[SessionPlan, ...]:
    """All 45 sessions with the CSV's block and sentence counts and balanced corpus sums."""
    per_split: dict[str, list[list]] = {}
    for split, col in (("Train", 2), ("Val/Test", 4)):
        raw = []
        for idx, row in enumerate(SESSION_TABLE):
            n_sent, n_blocks = row[col], row[col + 1]
            for b in range(n_blocks):
                raw.append([idx, "", n_sent // n_blocks + (1 if b < n_sent % n_blocks else 0)])
        totals = CORPUS_TOTALS[split]
        for blk, corpus in zip(raw, _round_robin(totals, len(raw))):
            blk[1] = corpus
        _balance(split, raw)
        per_split[split] = raw
    plans = []
    for idx, (session, day, *_rest) in enumerate(SESSION_TABLE):
        blocks = []
        for split in ("Train", "Val/Test"):
            for s, corpus, count in per_split[split]:
                if s == idx:
                    blocks.append(Block(len(blocks) + 1, corpus, count, split))
        plans.append(SessionPlan(idx, session, day, tuple(blocks)))
    return tuple(plans)


def preset_plan(preset: str) -> list[SessionPlan]:
    """The session plans of ``preset`` (tiny/small/full), in chronological order.

    tiny/small keep the real dates, post-implant days and corpora of the chosen sessions and scale
    every block's sentence count to about ``trials_per_session`` per session (at least 2 per
    Val/Test block, so that both val and test get trials).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    full = full_plan()
    plans = []
    for idx in spec.session_indices:
        plan = full[idx]
        train = [b for b in plan.blocks if b.split == "Train"][: spec.max_train_blocks]
        valtest = [b for b in plan.blocks if b.split == "Val/Test"][: spec.max_valtest_blocks]
        kept = train + valtest
        if spec.trials_per_session is not None:
            scale = spec.trials_per_session / sum(b.n_sentences for b in kept)
            kept = [Block(b.block_num, b.corpus, max(2 if b.split == "Val/Test" else 1,
                                                      round(b.n_sentences * scale)), b.split) for b in kept]
        plans.append(SessionPlan(plan.index, plan.session, plan.post_implant_day, tuple(kept)))
    return plans
