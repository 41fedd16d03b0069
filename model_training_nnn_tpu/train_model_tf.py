"""Train with TensorFlow: ``python model_training_nnn_tpu/train_model_tf.py [--config FILE] [key=value ...]``.

The config is ``model_training/rnn_args.yaml`` (the baseline recipe; ``--config`` takes an overlay of the
same keys) with ``key=value`` overrides, read by ``model_training/config.py``. The strategy is found by
``strategy.create_tpu_strategy`` (TPU VM / Colab / TPU_NAME, else GPUs, else CPU; one log line says which
and how many replicas); ``TF_CONFIG`` with several workers selects ``MultiWorkerMirroredStrategy``.
``--config model_training_nnn/rnn_args_nnn.yaml`` (``model.architecture: triple_gru``) trains the TripleGRUDecoder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model_training.args_yaml import CheckpointError  # noqa: E402
from model_training.config import DEFAULT_CONFIG, ConfigError, check_training_data, load_config  # noqa: E402
from nejm_b2txt_utils.cli_errors import print_bad_input  # noqa: E402
from nejm_b2txt_utils.t15_hdf5 import T15FormatError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. num_training_batches=2000 tpu_address=local tf_precision=bf16")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_training_data(cfg)  # before the trainer creates output_dir
        if str(cfg.get("tf_precision", "auto")) not in ("auto", "bf16", "fp32"):  # also before output_dir
            raise ConfigError(f"tf_precision: expected auto, bf16 or fp32, got {cfg.get('tf_precision')!r}")
        from model_training_nnn_tpu.strategy import TPUNotFoundError
        from model_training_nnn_tpu.trainer_tf import TFTrainer

        try:
            trainer = TFTrainer(cfg)
        except TPUNotFoundError as exc:
            raise ConfigError(f"require_tpu: {exc}") from exc
    except (ConfigError, CheckpointError, FileExistsError, FileNotFoundError, T15FormatError) as exc:
        return print_bad_input(exc)
    try:
        trainer.train()
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("model_training_nnn_tpu").setLevel(logging.INFO)
    sys.exit(main())
