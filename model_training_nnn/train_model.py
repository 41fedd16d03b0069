"""Train the adversarial TripleGRUDecoder: ``python model_training_nnn/train_model.py [--config FILE] [key=value ...]``.

The baseline's CLI (``model_training/train_model.py``: --config, key=value overrides, progress bar,
``resume=true``, torchrun for several GPUs) with the nnn trainer; the default config is
``rnn_args_nnn.yaml`` next to this script (the fork's full size); ``rnn_args_nnn_small.yaml`` trains on
2 CPU cores in minutes. Evaluate with ``model_training/evaluate_model.py --model_path <output_dir>``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_training.train_model import main as baseline_main  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "rnn_args_nnn.yaml"


def main(argv: list[str] | None = None) -> int:
    """Run the baseline CLI with the nnn trainer and config; returns the exit status (2 on bad input)."""
    from model_training_nnn.rnn_trainer import NNNTrainer

    return baseline_main(argv, default_config=DEFAULT_CONFIG, trainer_cls=NNNTrainer, description=__doc__)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
