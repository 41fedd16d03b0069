"""Rapid calibration figure from ``benchmarks/calibration.py``'s JSON: accuracy against sentences of the new day.

In the paper's style (accuracy, here phoneme accuracy = 100 - PER, against sentences of a day): the
later days' mean, with no recalibration (nearest day's layer), a new day from N sentences, online supervised
and online pseudo-label updates (running mean of the sentences decoded before each update) and the
full-data reference.

``python -m analyses.calibration_figure --json runs/calibration.json --out analyses/figures``
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analyses.figure_style import apply_style, save_figure, synthetic_title  # noqa: E402

log = logging.getLogger(__name__)


def running_accuracy(per_sentence: list[list[float]], window: int) -> np.ndarray:
    """Mean over days of the trailing ``window``-sentence mean phoneme accuracy (%), per sentence index.

    Args:
        per_sentence: per day, the PER of each streamed sentence (same length for every day).
        window: sentences averaged (trailing).

    Returns:
        ``[n_sentences]`` accuracy in percent.
    """
    n = min(len(p) for p in per_sentence)
    acc = 100.0 * (1.0 - np.asarray([p[:n] for p in per_sentence], dtype=float))  # (days, n)
    mean = acc.mean(axis=0)
    return np.asarray([mean[max(0, i - window + 1):i + 1].mean() for i in range(n)])


def plot_calibration(result: dict, window: int = 5) -> Figure:
    """Phoneme accuracy (%) against sentences of the new day, mean over the benchmark's later days.

    Args:
        result: the benchmark's JSON (``days`` with ``none_val_PER``, ``new_day``, ``full``, ``online_*``).
        window: running-mean window of the online curves (sentences).

    Returns:
        The figure.

    Raises:
        ValueError: ``result`` has no ``days``.
    """
    days = result.get("days") or []
    if not days:
        raise ValueError("calibration JSON: no 'days' (expected benchmarks/calibration.py output)")
    apply_style()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    n_stream = min(len(d["online_supervised"]["per_sentence_PER"]) for d in days)
    x = np.arange(1, n_stream + 1)
    for key, label, colour in (("online_supervised", "online, supervised", "tab:blue"),
                               ("online_pseudo", "online, pseudo-labels", "tab:orange")):
        ax.plot(x, running_accuracy([d[key]["per_sentence_PER"] for d in days], window), color=colour, label=label)
    ax.plot(x, running_accuracy([d["none_per_sentence_PER"] for d in days], window), color="0.5",
            label="no recalibration (nearest day)")
    ns = sorted(int(n) for n in days[0]["new_day"])
    acc_n = [100.0 * (1.0 - np.mean([d["new_day"][str(n)]["val_PER"] for d in days])) for n in ns]
    ax.plot(ns, acc_n, "o-", color="tab:green", label="new day from N sentences (held-out)")
    ax.axhline(100.0 * (1.0 - np.mean([d["full"]["val_PER"] for d in days])), color="k", ls="--", lw=1,
               label="new day from all its sentences")
    ax.axhline(100.0 * (1.0 - np.mean([d["none_val_PER"] for d in days])), color="0.5", ls=":", lw=1)
    ax.set_xlabel("Sentences of the new day")
    ax.set_ylabel("Phoneme accuracy (%)")
    ax.spines[["top", "right"]].set_visible(False)
    synthetic = "synthetic" in str(result.get("data", "")) or "small" in str(result.get("data", ""))
    ax.set_title(synthetic_title(f"Rapid calibration, {len(days)} unseen days", synthetic), fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True, help="benchmarks/calibration.py output")
    p.add_argument("--out", type=Path, default=Path("analyses/figures"), help="output folder")
    p.add_argument("--window", type=int, default=5, help="running-mean window of the online curves (sentences)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    try:
        result = json.loads(args.json.read_text())
        save_figure(plot_calibration(result, args.window), args.out / "calibration_accuracy")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {args.json}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
