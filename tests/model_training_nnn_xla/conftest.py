"""PyTorch/XLA tests: collected only where torch_xla is installed (``envs/b2txt_xla``, ``./setup_xla.sh``).

Run: ``PJRT_DEVICE=CPU envs/b2txt_xla/bin/python -m pytest tests/model_training_nnn_xla -q``. In any other
environment this folder is skipped without importing torch_xla (which patches ``torch.nn.GRU``). Every
XLA graph here is compiled for T <= 20 bins and hidden sizes <= 16: XLA on the CPU compiles whole steps.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

if importlib.util.find_spec("torch_xla") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    os.environ.setdefault("PJRT_DEVICE", "CPU")


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """``model_training_nnn.xla_toy_data``: 2 sessions of 18-20-bin trials (labels coded on channels 0-5)."""
    from model_training_nnn.xla_toy_data import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("xla_toy"), n_train=32, n_val=6)


def toy_overrides(data_root: Path, output_dir: Path, **extra) -> list[str]:
    """key=value overrides turning rnn_args_nnn.yaml into a tiny TripleGRUDecoder run on the toy data
    (channels 0-7, patches of 2 bins every bin: noise GRU 2 x 16, clean 3 x 16, noisy 2 x 16)."""
    kv = {
        "output_dir": str(output_dir), "compile": "false",
        "model.n_input_features": 8, "dataset.feature_subset": "[0,1,2,3,4,5,6,7]",
        "model.n_units": 16, "model.patch_size": 2, "model.patch_stride": 1, "model.rnn_dropout": 0.0,
        "model.input_network.input_layer_dropout": 0.0,
        "num_training_batches": 12, "lr_max": 0.05, "lr_max_day": 0.05, "lr_min": 0.005, "lr_min_day": 0.005,
        "lr_warmup_steps": 2, "lr_warmup_steps_day": 2, "lr_decay_steps": 12, "lr_decay_steps_day": 12,
        "batches_per_train_log": 4, "batches_per_val_step": 6, "seed": 3,
        "dataset.batch_size": 4, "dataset.days_per_batch": 2, "dataset.num_dataloader_workers": 0,
        "dataset.dataset_dir": str(data_root), "dataset.sessions": "auto",
        "dataset.dataset_probability_val": "auto", "dataset.data_transforms.smooth_kernel_std": 1,
        "xla.time_buckets": "[20]", "xla.precision": "fp32",  # one bucket: toy trials are 18-20 bins
    }
    kv.update(extra)
    return [f"{k}={v}" for k, v in kv.items()]


def toy_config(data_root: Path, output_dir: Path, **extra):
    from model_training.config import load_config

    return load_config(REPO / "model_training_nnn" / "rnn_args_nnn.yaml", toy_overrides(data_root, output_dir, **extra))
