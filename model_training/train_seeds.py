"""Train one recipe with several seeds: ``python model_training/train_seeds.py --seeds 3 [--config FILE] [key=value]``.

Run ``s`` (s = 1..N, or the values of ``--seed_list``) is ``train_model.py`` with ``seed=s dataset.seed=s`` (model
initialisation, augmentation and batch order all change) and ``output_dir=<output_dir>/seed_<s>``, one after
the other. A seed folder that already exists is continued with ``resume=true``, so rerunning the same command
after an interruption finishes the remaining work. The seed folders are what ``evaluate_model.py --model_path
RUN/seed_1 RUN/seed_2 ...`` ensembles, or what a harness reports as mean +- SEM over seeds.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_training import train_model  # noqa: E402
from model_training.config import DEFAULT_CONFIG, ConfigError, load_config  # noqa: E402
from nejm_b2txt_utils.cli_errors import print_bad_input  # noqa: E402

log = logging.getLogger("train_seeds")


def seed_runs(output_dir: str, seeds: list[int]) -> list[tuple[int, Path]]:
    """``[(seed, <output_dir>/seed_<seed>)]`` in the given order."""
    return [(s, Path(output_dir) / f"seed_{s}") for s in seeds]


def main(argv: list[str] | None = None, train_main=train_model.main) -> int:
    """The CLI; ``train_main(argv) -> exit code`` is ``train_model.main`` (a variant passes its own)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="train seeds 1..N (default: %(default)s)")
    p.add_argument("--seed_list", type=int, nargs="+", default=None, help="train exactly these seeds instead")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = p.parse_args(argv)
    try:
        if args.seeds < 1 and not args.seed_list:
            raise ConfigError(f"--seeds: expected an integer >= 1, got {args.seeds}")
        base_out = load_config(args.config, args.overrides).output_dir
    except ConfigError as exc:
        return print_bad_input(exc)
    seeds = args.seed_list or list(range(1, args.seeds + 1))
    for seed, out in seed_runs(base_out, seeds):
        resume = ["resume=true"] if out.exists() and any(out.iterdir()) else []
        log.info("seed %d -> %s%s", seed, out, " (resuming)" if resume else "")
        rc = train_main(["--config", args.config, *args.overrides, f"seed={seed}", f"dataset.seed={seed}",
                         f"output_dir={out}", *resume])
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
