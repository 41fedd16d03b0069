"""Train the baseline GRU decoder: ``python model_training/train_model.py [--config FILE] [key=value ...]``.

Defaults to ``rnn_args.yaml`` next to this script (the original recipe). Relative paths in a YAML
resolve against the YAML's folder, paths given as ``key=value`` against the current directory.
Several GPUs: ``torchrun --nproc_per_node N model_training/train_model.py ...`` (DDP).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_training.checkpoint import CheckpointError  # noqa: E402
from model_training.config import DEFAULT_CONFIG, ConfigError, check_training_data, load_config  # noqa: E402
from nejm_b2txt_utils.atomic_io import DiskFullError  # noqa: E402
from nejm_b2txt_utils.cli_errors import print_bad_input  # noqa: E402
from nejm_b2txt_utils.t15_hdf5 import T15FormatError  # noqa: E402


def parse_args(argv: list[str] | None = None, default_config: Path = DEFAULT_CONFIG,
               description: str | None = __doc__) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(default_config), help="YAML config (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. num_training_batches=2000 dataset.batch_size=32 resume=true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, default_config: Path = DEFAULT_CONFIG, trainer_cls: type | None = None,
         description: str | None = __doc__) -> int:
    """The CLI; variants (model_training_nnn) pass their default config, trainer class and --help text."""
    args = parse_args(argv, default_config, description)
    try:
        cfg = load_config(args.config, args.overrides)
        check_training_data(cfg)  # before the trainer creates output_dir
        from model_training.rnn_trainer import BrainToTextDecoder_Trainer, NonFiniteTrainingError

        trainer = (trainer_cls or BrainToTextDecoder_Trainer)(cfg)
    except (ConfigError, CheckpointError, FileExistsError, FileNotFoundError, T15FormatError) as exc:
        return print_bad_input(exc)
    try:
        trainer.train()
    except (NonFiniteTrainingError, DiskFullError) as exc:  # the data or lr, a full disk: one line
        return print_bad_input(exc)
    finally:
        trainer.close()
    if getattr(trainer, "interrupted_at", None) is not None:  # Ctrl-C: last_checkpoint saved, the loop logged it
        return 130
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
