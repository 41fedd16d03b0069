"""CLI: ``python -m nejm_b2txt_utils.synthetic --preset {tiny,small,hard,full} --out DIR --seed N``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from nejm_b2txt_utils.cli_errors import ConfigError, print_bad_input
from nejm_b2txt_utils.synthetic.sessions import PRESET_HELP, PRESETS
from nejm_b2txt_utils.synthetic.writer import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nejm_b2txt_utils.synthetic",
        description="Write synthetic T15 data: DIR/hdf5_data_final/<session>/data_{train,val,test}.hdf5, "
                    "DIR/t15_copyTaskData_description.csv and DIR/lm_corpus.txt.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="; ".join(f"{name}: {PRESET_HELP[name]}" for name in sorted(PRESETS))
                        + " (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--max_sessions", type=int, default=None,
                        help="write only the first N sessions of the preset (a prefix of the full run)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        summary = generate(args.preset, args.out, seed=args.seed, sessions=args.max_sessions,
                           progress=not args.no_progress)
    except (ConfigError, OSError) as exc:  # OSError: an output folder that cannot be written
        return print_bad_input(exc)
    t = summary["trials"]
    print(f"{summary['preset']}: {len(summary['sessions'])} sessions, trials train/val/test = "
          f"{t['train']}/{t['val']}/{t['test']}, {summary['total_bins']} bins, "
          f"{summary['bytes'] / 1e6:.1f} MB, {summary['words_per_minute']} words/min, "
          f"{summary['wall_s']} s -> {summary['out_dir']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
