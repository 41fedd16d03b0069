"""Fixtures for the TensorFlow port's tests; they run in ``envs/b2txt_tf`` and are skipped without TensorFlow."""

from __future__ import annotations

import importlib.util
import os

import pytest

if importlib.util.find_spec("tensorflow") is None:  # the b2txt25 env: nothing here can run
    collect_ignore_glob = ["test_*.py"]
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # One thread each: tiny models gain nothing from a second one on a shared 2-core box.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


@pytest.fixture(autouse=True)
def fp32_policy():
    """Every test starts and ends with the float32 Keras policy (mixed_bfloat16 is global state)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """``nejm_b2txt_utils.synthetic`` preset tiny (3 sessions, the first without val/test data)."""
    from nejm_b2txt_utils.synthetic import generate

    root = tmp_path_factory.mktemp("synth_tiny")
    generate("tiny", root, seed=0, progress=False)
    return root


def tiny_tf_config(data_root, output_dir, **extra):
    """The baseline tests' tiny CPU config (``tests/model_training/conftest.py``) for the TF trainer."""
    from model_training.config import load_config
    from tests.model_training.conftest import REPO, tiny_overrides

    extra = {"batches_per_train_log": 5, "save_val_logits": "false", **extra}
    return load_config(REPO / "model_training" / "rnn_args.yaml", tiny_overrides(data_root, output_dir, **extra))
