"""A training run's set-up before the first batch, framework-free, shared by the PyTorch trainer
(``rnn_trainer.py``) and the TensorFlow one (``model_training_nnn_tpu/trainer_tf.py``): the output folders
(or the checkpoint to resume from), the log (file + lines above the progress bar), and the trial split with
its batch index (``train_val_trials.json`` written beside the log). Imports neither torch nor TF.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model_training.trial_batches import TrialBatches, drop_ctc_infeasible, train_test_split_indicies
from nejm_b2txt_utils.atomic_io import atomic_write_json


class TqdmLogHandler(logging.StreamHandler):
    """Log lines printed above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)
        sys.stdout.flush()  # tqdm.write does not flush: redirected (nohup, slurm) lines appeared only at exit


def prepare_output_dirs(args: Mapping, is_main: bool, barrier: Callable[[], None] = lambda: None) -> Path | None:
    """Create ``output_dir`` and ``checkpoint_dir`` (rank 0 only); return the checkpoint to resume from.

    Args:
        args: the config (``mode``, ``output_dir``, ``checkpoint_dir``, ``resume``).
        is_main: whether this process writes files.
        barrier: waits for every rank (DDP); nothing for one process.

    Returns:
        ``checkpoint_dir/last_checkpoint`` when ``resume`` is true and it exists, else None (also outside
        ``mode: train``, where nothing is created).

    Raises:
        FileExistsError: ``output_dir`` exists, is not empty and ``resume`` is false.
    """
    if args.get("mode", "train") != "train":
        return None
    output_dir, checkpoint_dir = Path(args["output_dir"]), Path(args["checkpoint_dir"])
    last = checkpoint_dir / "last_checkpoint"
    resume = bool(args.get("resume", False))
    exists = output_dir.exists() and any(output_dir.iterdir())
    # Fix: the original crashed whenever output_dir existed; we resume or explain what to do.
    if exists and not resume:
        raise FileExistsError(f"output_dir {output_dir} already exists: pass output_dir=<new folder> for a "
                              "new run, or resume=true to continue this one")
    barrier()
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    return last if resume and last.is_file() else None


def setup_logging(name: str, args: Mapping, is_main: bool) -> logging.Logger:
    """The run's logger: ``output_dir/training_log`` (rank 0, ``mode: train``) and lines above the progress bar.

    Args:
        name: the logger's name (the trainer's module).
        args: the config (``mode``, ``output_dir``).
        is_main: rank 0 logs INFO, the other ranks WARNING only.

    Returns:
        The logger, its earlier handlers closed (a second trainer in one process does not log twice).
    """
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s: %(message)s")
    if is_main and args.get("mode", "train") == "train":
        fh = logging.FileHandler(Path(args["output_dir"]) / "training_log", mode="a")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    sh = TqdmLogHandler()
    sh.setFormatter(fmt)
    logger.addHandler(sh)
    return logger


def close_logging(logger: logging.Logger) -> None:
    """Remove and close every handler of ``logger`` (releases ``training_log``)."""
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def build_trial_batches(args: Mapping, is_main: bool, rank: int = 0, world_size: int = 1,
                        batches_cls: type[TrialBatches] = TrialBatches) -> tuple[TrialBatches, TrialBatches]:
    """The train and val batches of a config (spec §3), and ``train_val_trials.json`` (rank 0).

    As the original: ``bad_trials_dict`` is ignored and val = the released val files. Fix: trials CTC cannot
    align under the largest random cut (``random_cut - 1`` bins) are left out of training at load.

    Args:
        args: the config (``dataset.*``, ``model.patch_size`` / ``patch_stride``, ``num_training_batches``,
            ``output_dir``).
        is_main: whether to write ``train_val_trials.json``.
        rank, world_size: this rank's slice of every train batch (DDP); val batches are whole.
        batches_cls: :class:`TrialBatches` (NumPy) or a subclass (the PyTorch ``BrainToTextDataset``).

    Returns:
        ``(train, val)``.

    Raises:
        FileNotFoundError: no training trial in any session.
    """
    ds, m = args["dataset"], args["model"]
    patching = (int(m["patch_size"]), int(m["patch_stride"]))
    max_cut = max(int(ds["data_transforms"].get("random_cut", 0) or 0) - 1, 0)
    sessions = list(ds["sessions"])
    paths = {split: [os.path.join(ds["dataset_dir"], s, f"data_{split}.hdf5") for s in sessions]
             for split in ("train", "val")}
    train_trials, _ = train_test_split_indicies(paths["train"], test_percentage=0, seed=ds["seed"])
    train_trials = drop_ctc_infeasible(train_trials, *patching, max_cut)
    _, val_trials = train_test_split_indicies(paths["val"], test_percentage=1, seed=ds["seed"])
    if not any(v["trials"] for v in train_trials.values()):
        raise FileNotFoundError(f"{ds['dataset_dir']}: no training trials found for the {len(sessions)} sessions "
                                "(expected <dataset_dir>/<session>/data_train.hdf5)")
    if is_main:
        atomic_write_json(Path(args["output_dir"]) / "train_val_trials.json",
                          {"train": train_trials, "val": val_trials}, indent=None)
    feature_subset = ds.get("feature_subset")
    width = None if feature_subset else int(m["n_input_features"])  # was 512 whatever model.n_input_features said
    train = batches_cls(train_trials, int(args["num_training_batches"]), "train", ds["batch_size"],
                        ds["days_per_batch"], ds["seed"], must_include_days=None, feature_subset=feature_subset,
                        patching=patching, n_features=width).shard(rank, world_size)
    val = batches_cls(val_trials, None, "test", ds["batch_size"], None, ds["seed"], feature_subset=feature_subset,
                      patching=patching, n_features=width)
    return train, val


def train_batch_order(args: Mapping, start: int) -> list[int]:
    """The train batch indices from ``start`` on: in order, or a fixed permutation with ``dataset.loader_shuffle``."""
    n = int(args["num_training_batches"])
    if args["dataset"].get("loader_shuffle", False):
        return np.random.RandomState(args["dataset"]["seed"]).permutation(n)[start:].tolist()
    return list(range(start, n))
