"""Figure 2 of the paper: copy-task accuracy from ``t15_copyTask.pkl`` (spec §9.1).

The pickle is a dict of parallel per-trial sequences: ``cue_sentence``, ``cue_sentence_phonemes``,
``decoded_phonemes_raw`` (the RNN's greedy phonemes), ``decoded_sentence`` (after the LM),
``decoded_sentence_phonemes``, ``decoded_logits`` ([T, 41] per trial, **LM order** BLANK, SIL, AA..ZH,
80 ms frames), ``post_implant_day`` and ``vocab_size`` (50 or 125000). An optional ``synthetic: True``
marks data from :mod:`analyses.synthetic_pkl`; every figure drawn from it says so in its title.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analyses.figure_style import synthetic_title
from analyses.pkl_io import PklFormatError, check_parallel, read_pickle, require_keys
from nejm_b2txt_utils.metrics import ErrorRate, aggregate_error_rate
from nejm_b2txt_utils.phonemes import LM_ORDER, N_CLASSES, SIL

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("cue_sentence", "cue_sentence_phonemes", "decoded_phonemes_raw", "decoded_sentence",
                 "decoded_sentence_phonemes", "decoded_logits", "post_implant_day", "vocab_size")
VOCAB_SIZES = (50, 125000)
VOCAB_COLORS = {50: "red", 125000: "blue"}
VOCAB_LABELS = {50: "50-word vocabulary", 125000: "125,000-word vocabulary"}
EXAMPLE_TRIAL = 500  # the original's example (post-implant day 69 in the real data)


def is_synthetic(data: dict) -> bool:
    return bool(data.get("synthetic", False))


def validate_copy_task(data: Any, source: str = "t15_copyTask.pkl") -> dict:
    """Check keys, lengths and logit shapes; returns a shallow copy with day/vocab as int arrays."""
    require_keys(data, REQUIRED_KEYS, source)
    n = check_parallel(data, REQUIRED_KEYS, source)
    out = dict(data)
    for key in ("post_implant_day", "vocab_size"):
        try:
            out[key] = np.asarray(data[key]).astype(np.int64, casting="unsafe").reshape(n)
        except (TypeError, ValueError) as exc:
            raise PklFormatError(f"{source}: [{key!r}] must hold one integer per trial ({exc})") from exc
    for i, logits in enumerate(data["decoded_logits"]):
        shape = np.shape(logits)
        if len(shape) != 2 or shape[1] != N_CLASSES:
            raise PklFormatError(f"{source}: ['decoded_logits'][{i}] has shape {shape}, "
                                 f"expected [T, {N_CLASSES}] in LM order")
    other = sorted(set(out["vocab_size"].tolist()) - set(VOCAB_SIZES))
    if other:
        log.warning("%s: vocab sizes %s are not plotted (the figure shows %s)", source, other, VOCAB_SIZES)
    return out


def load_copy_task(path: str | os.PathLike) -> dict:
    """Read and validate a ``t15_copyTask.pkl``-format file."""
    return validate_copy_task(read_pickle(path, "copy-task results (t15_copyTask.pkl)"), str(path))


# ---------------------------------------------------------------- per-day error rates


@dataclass(frozen=True)
class DayRates:
    """Raw phoneme error rate (greedy RNN output) and word error rate (after the LM) of one day/vocab."""

    day: int
    vocab_size: int
    n_trials: int
    rper: ErrorRate
    wer: ErrorRate


def error_rates_by_day(data: dict, n_resamples: int = 10_000, seed: int | None = 0) -> list[DayRates]:
    """rPER and WER with bootstrap 95 % CIs for every (post-implant day, vocab size) with trials.

    rPER counts SIL tokens; WER splits the sentences on whitespace without normalisation, as the
    original notebook did. The bootstrap is seeded (the original's was not), so reruns agree.
    """
    days = np.asarray(data["post_implant_day"])
    vocab = np.asarray(data["vocab_size"])
    rows = []
    for day in np.unique(days):
        for size in VOCAB_SIZES:
            idx = np.flatnonzero((days == day) & (vocab == size))
            if idx.size == 0:
                continue
            rper = aggregate_error_rate([list(data["cue_sentence_phonemes"][i]) for i in idx],
                                        [list(data["decoded_phonemes_raw"][i]) for i in idx],
                                        n_resamples=n_resamples, seed=seed)
            wer = aggregate_error_rate([str(data["cue_sentence"][i]).split() for i in idx],
                                       [str(data["decoded_sentence"][i]).split() for i in idx],
                                       n_resamples=n_resamples, seed=seed)
            rows.append(DayRates(int(day), int(size), int(idx.size), rper, wer))
    return rows


TABLE_HEADER = "  day   vocab trials  rPER(%)   CI low  CI high   WER(%)   CI low  CI high"


def format_rates_table(rows: list[DayRates]) -> str:
    """The per-day table the notebook prints (percentages, two decimals)."""
    lines = ["Raw phoneme error rate (rPER) and word error rate (WER) per post-implant day, bootstrap 95% CI",
             TABLE_HEADER]
    for r in rows:
        vals = [r.rper.rate, r.rper.ci_low, r.rper.ci_high, r.wer.rate, r.wer.ci_low, r.wer.ci_high]
        lines.append(f"{r.day:>5d} {r.vocab_size:>7d} {r.n_trials:>6d} "
                     + " ".join(f"{100 * v:>8.2f}" for v in vals))
    return "\n".join(lines)


def plot_error_rates(rows: list[DayRates], synthetic: bool = False) -> Figure:
    """Top: rPER, bottom: WER, per day (categorical x axis), red 50 words / blue 125,000 words."""
    fig = Figure(figsize=(12, 7))
    days = sorted({r.day for r in rows})
    pos = {d: i for i, d in enumerate(days)}
    top = 20.0  # the original's y-limit; raised (to a multiple of 5) only when a CI would be cut off
    for r in rows:
        top = max(top, 5 * math.ceil(100 * max(r.rper.ci_high, r.wer.ci_high, r.rper.rate, r.wer.rate) / 5))
    for k, (attr, ylabel) in enumerate((("rper", "Raw phoneme error rate (%)"), ("wer", "Word error rate (%)"))):
        ax = fig.add_subplot(2, 1, k + 1)
        for r in rows:
            rate: ErrorRate = getattr(r, attr)
            color = VOCAB_COLORS.get(r.vocab_size, "gray")
            x = pos[r.day]
            ax.plot(x, 100 * rate.rate, "o", color=color, clip_on=False)  # a 0 % WER stays visible
            ax.plot([x, x], [100 * rate.ci_low, 100 * rate.ci_high], "-", color=color, clip_on=False)
        ax.set_xticks(range(len(days)), [str(d) for d in days])
        ax.set_ylim(0, top)
        ax.set_ylabel(ylabel)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.4)
        if k == 0:
            ax.set_title(synthetic_title("Copy task: error rates per session", synthetic))
            present = sorted({r.vocab_size for r in rows})
            handles = [Line2D([], [], marker="o", color=VOCAB_COLORS.get(v, "gray"), label=VOCAB_LABELS.get(v, str(v)))
                       for v in present]
            ax.legend(handles=handles, frameon=False, loc="upper right")
    fig.axes[-1].set_xlabel("Days post-implant")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the example trial


def example_trial_index(data: dict, preferred: int = EXAMPLE_TRIAL) -> int:
    """``preferred`` if the file has that many trials, else the middle trial."""
    n = len(data["cue_sentence"])
    if 0 <= preferred < n:
        return preferred
    log.info("trial %d does not exist (%d trials): using trial %d", preferred, n, n // 2)
    return n // 2


def _show_phonemes(phonemes) -> str:
    return " ".join("|" if p == SIL else str(p) for p in phonemes)


def example_trial_text(data: dict, trl: int) -> str:
    """Five aligned lines: cue words, cue phonemes, raw decoded phonemes, decoded words and phonemes."""
    lines = [
        ("Cue sentence", str(data["cue_sentence"][trl])),
        ("Cue phonemes", _show_phonemes(data["cue_sentence_phonemes"][trl])),
        ("Decoded phonemes (raw)", _show_phonemes(data["decoded_phonemes_raw"][trl])),
        ("Decoded sentence", str(data["decoded_sentence"][trl])),
        ("Decoded phonemes", _show_phonemes(data["decoded_sentence_phonemes"][trl])),
    ]
    width = max(len(k) for k, _ in lines) + 2
    head = (f"Trial {trl}, post-implant day {int(data['post_implant_day'][trl])}, "
            f"vocabulary {int(data['vocab_size'][trl])}" + (" (synthetic data)" if is_synthetic(data) else ""))
    return "\n".join([head] + [f"{k + ':':<{width}}{v}" for k, v in lines])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities per frame. The original's plain exp/sum overflowed for large logits; the
    max-subtracted form gives the same values without overflow."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _trial_title(data: dict, trl: int) -> str:
    title = f'Post-implant day {int(data["post_implant_day"][trl])}, cue: "{data["cue_sentence"][trl]}"'
    return synthetic_title(title, is_synthetic(data))


def plot_logit_traces(data: dict, trl: int) -> Figure:
    """All 41 logit traces over time (80 ms frames)."""
    logits = np.asarray(data["decoded_logits"][trl], dtype=np.float64)
    fig = Figure(figsize=(16, 5))
    ax = fig.add_subplot()
    ax.plot(logits, ".-", markersize=3, linewidth=1)
    ax.set_xlim(0, logits.shape[0])
    ax.set_xlabel("Time step (80 ms)")
    ax.set_ylabel("Logit")
    ax.set_title(_trial_title(data, trl))
    fig.tight_layout()
    return fig


def _class_heatmap(data: dict, trl: int, values: np.ndarray, label: str) -> Figure:
    fig = Figure(figsize=(16, 5))
    ax = fig.add_subplot()
    im = ax.imshow(values.T, aspect="auto", cmap="Blues", interpolation="none")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_yticks(range(N_CLASSES), LM_ORDER, fontsize=8)
    ax.grid(axis="y", alpha=0.2)
    ax.set_xlabel("Time step (80 ms)")
    ax.set_title(_trial_title(data, trl))
    fig.tight_layout()
    return fig


def plot_logit_heatmap(data: dict, trl: int) -> Figure:
    """Logits as classes (LM order) x time."""
    return _class_heatmap(data, trl, np.asarray(data["decoded_logits"][trl], dtype=np.float64), "Logit")


def plot_probability_heatmap(data: dict, trl: int) -> Figure:
    """Softmax probabilities as classes (LM order) x time."""
    return _class_heatmap(data, trl, softmax(data["decoded_logits"][trl]), "Probability")
