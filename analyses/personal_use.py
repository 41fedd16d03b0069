"""Figure 4 of the paper: personal use, from ``t15_personalUse.pkl`` (spec §9.2).

The pickle is a dict with ``trialized_info`` (parallel per-trial lists ``correctness_rating``,
``post_implant_day``, ``wpm`` (NaN allowed)), ``total_use_time`` (post-implant day -> seconds) and
``total_trial_count`` (post-implant day -> sentences). An optional ``synthetic: True`` marks data from
:mod:`analyses.synthetic_pkl`. Panels: A cumulative use, B correctness pie, C per-day breakdown + WPM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from analyses.figure_style import mark_synthetic, synthetic_title
from analyses.pkl_io import PklFormatError, check_parallel, read_pickle, require_keys

TOP_KEYS = ("trialized_info", "total_use_time", "total_trial_count")
TRIAL_KEYS = ("correctness_rating", "post_implant_day", "wpm")
RATINGS = ("correct", "mostly correct", "one word wrong", "incorrect", "response timeout", "blank trial",
           "no user rating")
#: Pie slices (panel B): label, ratings counted, colour.
PIE_SLICES = (("100% correct", ("correct",), "lightgreen"),
              ("Mostly correct", ("mostly correct", "one word wrong"), (255 / 255, 213 / 255, 128 / 255)),
              ("Incorrect", ("incorrect",), "lightcoral"))
#: Per-day lines (panel C): label, ratings counted, colour.
DAY_LINES = (("Fully correct", ("correct",), "g"),
             ("Mostly correct", ("mostly correct", "one word wrong"), "y"),
             ("Incorrect", ("incorrect",), "r"),
             ("Blank trial", ("blank trial",), "0.4"),
             ("No user rating", ("response timeout", "no user rating"), "0.6"))


def is_synthetic(data: dict) -> bool:
    return bool(data.get("synthetic", False))


def validate_personal_use(data: Any, source: str = "t15_personalUse.pkl") -> dict:
    """Check the structure; returns a copy with the per-trial fields as numpy arrays."""
    require_keys(data, TOP_KEYS, source)
    info = data["trialized_info"]
    require_keys(info, TRIAL_KEYS, source, where="['trialized_info']")
    n = check_parallel(info, TRIAL_KEYS, source, where="['trialized_info']")
    ratings = np.asarray([str(r) for r in info["correctness_rating"]], dtype=object)
    unknown = sorted(set(ratings.tolist()) - set(RATINGS))
    if unknown:
        raise PklFormatError(f"{source}: ['trialized_info']['correctness_rating'] has unknown values {unknown}: "
                             f"expected one of {list(RATINGS)}")
    try:
        days = np.asarray(info["post_implant_day"]).astype(np.int64).reshape(n)
        wpm = np.asarray(info["wpm"], dtype=np.float64).reshape(n)
    except (TypeError, ValueError) as exc:
        raise PklFormatError(f"{source}: ['trialized_info']: post_implant_day must be integers and wpm "
                             f"numbers (NaN allowed), one per trial ({exc})") from exc
    for key in ("total_use_time", "total_trial_count"):
        if not isinstance(data[key], dict):
            raise PklFormatError(f"{source}: [{key!r}] is a {type(data[key]).__name__}, "
                                 "expected a dict post-implant day -> value")
    missing = [d for d, t in data["total_use_time"].items() if t != 0 and d not in data["total_trial_count"]]
    if missing:
        raise PklFormatError(f"{source}: ['total_trial_count'] misses day(s) {missing[:5]} "
                             "that ['total_use_time'] has")
    out = dict(data)
    out["trialized_info"] = {**info, "correctness_rating": ratings, "post_implant_day": days, "wpm": wpm}
    return out


def load_personal_use(path: str | os.PathLike) -> dict:
    """Read and validate a ``t15_personalUse.pkl``-format file."""
    return validate_personal_use(read_pickle(path, "personal-use results (t15_personalUse.pkl)"), str(path))


# ---------------------------------------------------------------- panel A


@dataclass(frozen=True)
class CumulativeUse:
    days: np.ndarray  # post-implant days with use, in the dict's order
    hours: np.ndarray  # cumulative use time (h)
    sentences: np.ndarray  # cumulative sentence count


def cumulative_use(data: dict) -> CumulativeUse:
    """Cumulative hours and sentences over the days of ``total_use_time`` (dict order, zero-use days skipped)."""
    days, secs, counts = [], [], []
    for day, seconds in data["total_use_time"].items():
        if seconds == 0:
            continue
        days.append(int(day))
        secs.append(float(seconds))
        counts.append(int(data["total_trial_count"][day]))
    return CumulativeUse(np.asarray(days, dtype=np.int64), np.cumsum(np.asarray(secs) / 3600.0),
                         np.cumsum(np.asarray(counts, dtype=np.int64)))


def plot_cumulative_use(data: dict) -> Figure:
    use = cumulative_use(data)
    fig = Figure()
    for k, (values, style, ylabel) in enumerate(((use.hours, "b.-", "Total use time (hours)"),
                                                 (use.sentences, "r.-", "Total sentences"))):
        ax = fig.add_subplot(2, 1, k + 1)
        ax.plot(use.days, values, style)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.axes[-1].set_xlabel("Post-implant day")
    mark_synthetic(fig, is_synthetic(data), "Cumulative personal use")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- panel B


@dataclass(frozen=True)
class RatingSummary:
    labels: tuple[str, ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    @property
    def percents(self) -> tuple[float, ...]:
        return tuple(100.0 * c / self.total if self.total else float("nan") for c in self.counts)


def rating_summary(data: dict) -> RatingSummary:
    """Counts of the pie's three slices; timeouts, blank trials and unrated trials are left out."""
    ratings = data["trialized_info"]["correctness_rating"]
    counts = tuple(int(np.isin(ratings, list(members)).sum()) for _, members, _ in PIE_SLICES)
    return RatingSummary(tuple(label for label, _, _ in PIE_SLICES), counts)


def plot_correctness_pie(data: dict) -> Figure:
    summary = rating_summary(data)
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    ax.pie(summary.counts, labels=[f"{lab} ({c})" for lab, c in zip(summary.labels, summary.counts)],
           colors=[color for _, _, color in PIE_SLICES], autopct="%1.1f%%", startangle=90)
    ax.axis("equal")
    ax.set_title(synthetic_title(f"{summary.total} total sentences", is_synthetic(data)))
    return fig


# ---------------------------------------------------------------- panel C


@dataclass(frozen=True)
class DailyBreakdown:
    days: np.ndarray
    counts: dict[str, np.ndarray]  # rating -> trials per day, for all seven ratings
    mean_wpm: np.ndarray  # nanmean per day, 0 where every value is NaN

    @property
    def totals(self) -> np.ndarray:
        return sum(self.counts.values())

    def percent(self, ratings: tuple[str, ...]) -> np.ndarray:
        """Share (%) of each day's trials (all categories in the denominator) rated as any of ``ratings``."""
        return 100.0 * sum(self.counts[r] for r in ratings) / self.totals


def daily_breakdown(data: dict) -> DailyBreakdown:
    info = data["trialized_info"]
    days_all, ratings, wpm = info["post_implant_day"], info["correctness_rating"], info["wpm"]
    days = np.unique(days_all)
    counts = {r: np.zeros(days.size, dtype=np.int64) for r in RATINGS}
    mean_wpm = np.zeros(days.size)
    for i, day in enumerate(days):
        sel = days_all == day
        for r in RATINGS:
            counts[r][i] = int((ratings[sel] == r).sum())
        values = wpm[sel]
        mean_wpm[i] = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    return DailyBreakdown(days, counts, mean_wpm)


def plot_daily_breakdown(data: dict) -> Figure:
    br = daily_breakdown(data)
    fig = Figure(figsize=(10, 6))
    grid = fig.add_gridspec(5, 1)
    ax = fig.add_subplot(grid[0:3, 0])
    for label, members, color in DAY_LINES:
        ax.plot(br.days, br.percent(members), ".-", color=color, linewidth=1, label=label)
    ax.set_ylabel("Sentence correctness (%)")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(synthetic_title("Personal use: sentence correctness per day", is_synthetic(data)))
    ax_n = fig.add_subplot(grid[3, 0], sharex=ax)
    ax_n.bar(br.days, br.totals, width=1, color="lightgray")
    ax_n.set_ylabel("Number of\nsentences")
    ax_w = fig.add_subplot(grid[4, 0], sharex=ax)
    ax_w.plot(br.days, br.mean_wpm, ".-", color="0.5")
    ax_w.set_ylabel("WPM")
    ax_w.set_xlabel("Post-implant day")
    for a in (ax, ax_n, ax_w):
        a.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def format_summary(data: dict) -> str:
    """The numbers the notebook prints: total use, the pie's counts and shares, mean WPM."""
    use = cumulative_use(data)
    pie = rating_summary(data)
    br = daily_breakdown(data)
    rated = br.mean_wpm > 0
    lines = [f"Total use: {use.hours[-1] if use.hours.size else 0.0:.2f} hours, "
             f"{int(use.sentences[-1]) if use.sentences.size else 0} sentences, {use.days.size} days"
             + (" (synthetic data)" if is_synthetic(data) else ""),
             f"Rated sentences: {pie.total}"]
    lines += [f"{label}: {count} ({pct:.1f}%)" for label, count, pct in zip(pie.labels, pie.counts, pie.percents)]
    lines.append(f"Mean WPM over days with WPM: {br.mean_wpm[rated].mean() if rated.any() else 0.0:.2f}")
    return "\n".join(lines)
