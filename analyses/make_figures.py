"""Draw Figures 2 and 4 without Jupyter: every panel as PNG + PDF (TrueType fonts) in one folder.

``python -m analyses.make_figures --copy_task data/t15_copyTask.pkl --personal_use data/t15_personalUse.pkl
--out analyses/figures``; ``--synthetic`` draws from generated data instead (written next to the figures).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from analyses import copy_task as ct
from analyses import personal_use as pu
from analyses.figure_style import apply_style, save_figure
from analyses.pkl_io import write_pickle
from analyses.synthetic_pkl import synthetic_copy_task, synthetic_personal_use

log = logging.getLogger(__name__)


def figure_2(data: dict, out_dir: Path, trial: int = ct.EXAMPLE_TRIAL, n_resamples: int = 10_000) -> list[Path]:
    """The example trial (traces, logit and probability heatmaps) and per-day rPER/WER; returns the files."""
    apply_style()
    trl = ct.example_trial_index(data, trial)
    print(ct.example_trial_text(data, trl))
    rows = ct.error_rates_by_day(data, n_resamples=n_resamples)
    print(ct.format_rates_table(rows))
    figures = {
        "figure2_example_logit_traces": ct.plot_logit_traces(data, trl),
        "figure2_example_logits": ct.plot_logit_heatmap(data, trl),
        "figure2_example_probabilities": ct.plot_probability_heatmap(data, trl),
        "figure2_error_rates": ct.plot_error_rates(rows, ct.is_synthetic(data)),
    }
    return [p for name, fig in figures.items() for p in save_figure(fig, out_dir / name)]


def figure_4(data: dict, out_dir: Path) -> list[Path]:
    """Panels A (cumulative use), B (correctness pie), C (per-day breakdown and WPM); returns the files."""
    apply_style()
    print(pu.format_summary(data))
    figures = {
        "figure4a_cumulative_use": pu.plot_cumulative_use(data),
        "figure4b_correctness": pu.plot_correctness_pie(data),
        "figure4c_daily_breakdown": pu.plot_daily_breakdown(data),
    }
    return [p for name, fig in figures.items() for p in save_figure(fig, out_dir / name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the panels of Figures 2 and 4 as PNG and PDF.")
    parser.add_argument("--copy_task", type=Path, help="t15_copyTask.pkl (Figure 2)")
    parser.add_argument("--personal_use", type=Path, help="t15_personalUse.pkl (Figure 4)")
    parser.add_argument("--out", type=Path, default=Path("analyses/figures"), help="output folder")
    parser.add_argument("--synthetic", action="store_true",
                        help="generate synthetic inputs for the figures whose pickle is not given")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--trial", type=int, default=ct.EXAMPLE_TRIAL, help="example trial of Figure 2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # its font subsetting logs every glyph
    if not (args.copy_task or args.personal_use or args.synthetic):
        parser.error("give --copy_task and/or --personal_use, or --synthetic")
    written: list[Path] = []
    try:
        if args.copy_task or args.synthetic:
            if args.copy_task:
                data = ct.load_copy_task(args.copy_task)
            else:
                data = synthetic_copy_task(args.seed)
                write_pickle(data, args.out / "t15_copyTask_synthetic.pkl")
            written += figure_2(data, args.out, args.trial)
        if args.personal_use or args.synthetic:
            if args.personal_use:
                use = pu.load_personal_use(args.personal_use)
            else:
                raw = synthetic_personal_use(args.seed)
                write_pickle(raw, args.out / "t15_personalUse_synthetic.pkl")
                use = pu.validate_personal_use(raw, "synthetic personal use")
            written += figure_4(use, args.out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("wrote %d files to %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
