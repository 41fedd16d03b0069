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


def toy_config(data_root: Path, output_dir: Path, **extra):
    """``rnn_args_nnn.yaml`` with ``xla_toy_data.toy_overrides``."""
    from model_training.config import load_config
    from model_training_nnn.xla_toy_data import toy_overrides

    return load_config(REPO / "model_training_nnn" / "rnn_args_nnn.yaml", toy_overrides(data_root, output_dir, **extra))
