"""Synthetic ``t15_copyTask.pkl`` and ``t15_personalUse.pkl`` in the original's structure (tests, demos).

Deterministic by seed; both carry ``synthetic: True`` so every figure drawn from them says so.

* Copy task: the 16 (post-implant day, vocabulary) groups of the paper's Figure 2, each with its
  published rPER and WER as the target error rate. Cue sentences come from the synthetic T15 corpora
  (``50-Word`` for the 50-word vocabulary, ``Switchboard`` otherwise), phonemes from the CMU lexicon.
  Raw decoded phonemes and decoded sentences are the cues with random substitutions, deletions and
  insertions at those rates; ``decoded_logits`` ([T, 41], LM order, 80 ms frames) peak at the raw decoded
  phonemes with blank frames in between, so their greedy CTC decode gives ``decoded_phonemes_raw``
  exactly, and where a phoneme was substituted the cue phoneme shows as a secondary peak.
* Personal use: daily use from day 26 to day 251 (about 23,000 sentences, 250 hours); trials before
  day 90 are unrated; rated trials are about 53 % correct, 32 % mostly correct, 15 % incorrect; WPM ~30.

``python -m analyses.synthetic_pkl --copy_task OUT.pkl --personal_use OUT.pkl [--seed N]``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from analyses.pkl_io import write_pickle
from nejm_b2txt_utils.lexicon import sentence_to_phonemes
from nejm_b2txt_utils.phonemes import N_CLASSES, PHONEME_TO_LM_ID, PHONEMES, SIL
from nejm_b2txt_utils.synthetic.sentences import make_sentence
from nejm_b2txt_utils.synthetic.wordlists import FIFTY_WORDS
from nejm_b2txt_utils.text import normalize_text

log = logging.getLogger(__name__)

#: (post-implant day, vocab size, rPER, WER): the stored results of the original notebook (spec §9.1).
COPY_TASK_GROUPS: tuple[tuple[int, int, float, float], ...] = (
    (25, 50, 0.0167, 0.0044), (27, 50, 0.0211, 0.0), (27, 125000, 0.1536, 0.0984),
    (34, 125000, 0.1289, 0.1361), (46, 125000, 0.0950, 0.0461), (48, 125000, 0.1170, 0.0540),
    (69, 125000, 0.1245, 0.0615), (74, 125000, 0.1017, 0.0389), (76, 125000, 0.1036, 0.0460),
    (81, 125000, 0.1058, 0.0406), (83, 125000, 0.1013, 0.0437), (88, 125000, 0.0693, 0.0254),
    (90, 125000, 0.0727, 0.0325), (95, 125000, 0.0776, 0.0099), (223, 125000, 0.0933, 0.0310),
    (244, 125000, 0.0733, 0.0182),
)  # fmt: skip


def _corrupt(ref: list[str], rate: float, alphabet: list[str], rng: np.random.Generator
             ) -> tuple[list[str], dict[int, str]]:
    """Copy ``ref`` with edits at ``rate`` per token (60 % substitution, 20 % deletion, 20 % insertion).

    Returns the hypothesis and, for substituted positions, hyp index -> the reference token.
    """
    hyp: list[str] = []
    substituted: dict[int, str] = {}
    for tok in ref:
        if rng.random() >= rate:
            hyp.append(tok)
            continue
        op = rng.random()
        if op < 0.6:
            choices = [a for a in alphabet if a != tok] or alphabet
            substituted[len(hyp)] = tok
            hyp.append(choices[int(rng.integers(len(choices)))])
        elif op < 0.8:
            continue
        else:
            hyp.extend([tok, alphabet[int(rng.integers(len(alphabet)))]])
    return hyp, substituted


def synthetic_logits(phonemes: list[str], rng: np.random.Generator,
                     secondary: dict[int, str] | None = None) -> np.ndarray:
    """[T, 41] LM-order logits whose greedy CTC decode is exactly ``phonemes`` (80 ms frames).

    Each phoneme peaks for 1-2 frames, followed by 2-5 blank frames; noise is bounded so the argmax
    is never in doubt. ``secondary`` (phoneme index -> symbol) adds a weaker peak on those frames.
    """
    secondary = secondary or {}
    # (phoneme index or -1 for blank, frames)
    segments: list[tuple[int, int]] = [(-1, int(rng.integers(8, 21)))]
    for k in range(len(phonemes)):
        segments += [(k, int(rng.integers(1, 3))), (-1, int(rng.integers(2, 6)))]
    segments.append((-1, int(rng.integers(8, 21))))
    total = sum(n for _, n in segments)
    logits = np.clip(rng.normal(0.0, 1.0, size=(total, N_CLASSES)), -2.0, 2.0)
    t = 0
    for k, n in segments:
        if k < 0:
            logits[t:t + n, 0] += 7.0
        else:
            logits[t:t + n, PHONEME_TO_LM_ID[phonemes[k]]] += 10.0
            logits[t:t + n, 0] += 3.0
            if k in secondary:
                logits[t:t + n, PHONEME_TO_LM_ID[secondary[k]]] += 5.0
        t += n
    return logits.astype(np.float32)


def synthetic_copy_task(seed: int = 0, trials_per_group: int = 50,
                        groups: tuple[tuple[int, int, float, float], ...] = COPY_TASK_GROUPS) -> dict:
    """A ``t15_copyTask.pkl``-format dict (per-trial lists; day and vocab as int arrays)."""
    rng = np.random.default_rng([seed, 0xC09])
    cues: list[tuple[int, int, float, float, str]] = []
    for day, vocab, rper, wer in groups:
        corpus = "50-Word" if vocab == 50 else "Switchboard"
        for _ in range(trials_per_group):
            cues.append((day, vocab, rper, wer, normalize_text(make_sentence(corpus, rng, max_words=10))))
    open_vocab = sorted({w for *_, s in cues for w in s.split()} | set(FIFTY_WORDS))
    phone_alphabet = [*PHONEMES, SIL]
    data: dict[str, list] = {k: [] for k in ("cue_sentence", "cue_sentence_phonemes", "decoded_phonemes_raw",
                                             "decoded_sentence", "decoded_sentence_phonemes", "decoded_logits",
                                             "post_implant_day", "vocab_size")}
    for day, vocab, rper, wer, cue in cues:
        cue_phones = sentence_to_phonemes(cue)[0]
        raw, substituted = _corrupt(cue_phones, rper, phone_alphabet, rng)
        words, _ = _corrupt(cue.split(), wer, list(FIFTY_WORDS) if vocab == 50 else open_vocab, rng)
        decoded = " ".join(words)
        data["cue_sentence"].append(cue)
        data["cue_sentence_phonemes"].append(cue_phones)
        data["decoded_phonemes_raw"].append(raw)
        data["decoded_sentence"].append(decoded)
        data["decoded_sentence_phonemes"].append(sentence_to_phonemes(decoded)[0])
        data["decoded_logits"].append(synthetic_logits(raw, rng, substituted))
        data["post_implant_day"].append(day)
        data["vocab_size"].append(vocab)
    out: dict = dict(data)
    out["post_implant_day"] = np.asarray(data["post_implant_day"], dtype=np.int64)
    out["vocab_size"] = np.asarray(data["vocab_size"], dtype=np.int64)
    out["synthetic"] = True
    return out


#: Rating probabilities once the participant rates sentences (before day 90 nothing is rated).
RATING_PROBS = {"correct": 0.47, "mostly correct": 0.20, "one word wrong": 0.085, "incorrect": 0.13,
                "response timeout": 0.04, "blank trial": 0.03, "no user rating": 0.045}
FIRST_RATED_DAY = 90


def synthetic_personal_use(seed: int = 0, first_day: int = 26, last_day: int = 251,
                           mean_trials_per_day: float = 160.0) -> dict:
    """A ``t15_personalUse.pkl``-format dict; ``mean_trials_per_day`` (a quarter of it before day 90, when
    sentences were not rated yet) scales it: 160 -> about 23,000 sentences."""
    rng = np.random.default_rng([seed, 0x9E5])
    names = list(RATING_PROBS)
    probs = np.array([RATING_PROBS[k] for k in names])
    probs /= probs.sum()
    ratings: list[str] = []
    days: list[int] = []
    wpm: list[float] = []
    use_time: dict[int, float] = {}
    trial_count: dict[int, int] = {}
    for day in range(first_day, last_day + 1):
        if rng.random() < 0.2:  # a day without use: recorded with zero time (panel A skips it)
            if rng.random() < 0.3:
                use_time[day], trial_count[day] = 0.0, 0
            continue
        mean = mean_trials_per_day / (4.0 if day < FIRST_RATED_DAY else 1.0)
        n = max(1, int(rng.gamma(4.0, mean / 4.0)))
        if day < FIRST_RATED_DAY:
            day_ratings = ["no user rating"] * n
        else:
            day_ratings = [names[i] for i in rng.choice(len(names), size=n, p=probs)]
        speed = 22.0 + 9.0 * min(1.0, (day - first_day) / 80.0)  # settles around 30 WPM
        for r in day_ratings:
            ratings.append(r)
            days.append(day)
            wpm.append(float("nan") if r in ("blank trial", "response timeout")
                       else float(np.clip(rng.normal(speed, 4.0), 8.0, 60.0)))
        use_time[day] = float(np.round(n * rng.uniform(30.0, 45.0), 1))
        trial_count[day] = n
    return {"trialized_info": {"correctness_rating": ratings, "post_implant_day": days, "wpm": wpm},
            "total_use_time": use_time, "total_trial_count": trial_count, "synthetic": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic t15_copyTask.pkl / t15_personalUse.pkl files "
                                                 "in the original's structure (marked synthetic).")
    parser.add_argument("--copy_task", type=Path, help="output path of the copy-task pickle")
    parser.add_argument("--personal_use", type=Path, help="output path of the personal-use pickle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials_per_group", type=int, default=50,
                        help="copy-task trials per (day, vocabulary) group (16 groups)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.copy_task is None and args.personal_use is None:
        parser.error("give --copy_task and/or --personal_use")
    if args.copy_task:
        write_pickle(synthetic_copy_task(args.seed, args.trials_per_group), args.copy_task)
        log.info("wrote %s", args.copy_task)
    if args.personal_use:
        write_pickle(synthetic_personal_use(args.seed), args.personal_use)
        log.info("wrote %s", args.personal_use)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
