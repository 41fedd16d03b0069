"""Checkpoints move between the frameworks: a TF run exports to a PyTorch run that the PyTorch loader
(``model_training.checkpoint.load_trained_model``) rebuilds with the same logits, and a PyTorch
checkpoint reads into the TF side."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
from omegaconf import OmegaConf

from model_training.checkpoint import CheckpointError, load_trained_model
from model_training.config import load_config
from model_training_nnn_tpu import checkpoint_tf
from model_training_nnn_tpu.convert import tf_to_torch, torch_to_tf
from model_training_nnn_tpu.models import build_model_tf
from tests.model_training.conftest import REPO


def _args(tmp_path):
    sessions = ["t15.2023.08.11", "t15.2023.08.13"]
    return load_config(REPO / "model_training" / "rnn_args.yaml", [
        f"output_dir={tmp_path}/run", "model.n_units=16", "model.n_layers=2", "model.n_input_features=8",
        "model.patch_size=3", "model.patch_stride=2", f"dataset.sessions=[{','.join(sessions)}]",
        "dataset.dataset_probability_val=[1,1]"])


def test_tf_run_exports_to_pytorch_and_back(tmp_path):
    args = _args(tmp_path)
    model = build_model_tf(args).build_for()
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.float32) * 0.3)
    run = tmp_path / "tf_run" / "checkpoint"
    run.mkdir(parents=True)
    (run / "args.yaml").write_text(OmegaConf.to_yaml(args, resolve=True))
    checkpoint_tf.save(run / "best_checkpoint", {"model_kind": "gru", "model_state_dict": tf_to_torch(model),
                                                 "val_PER": 0.25, "val_loss": 3.0})
    out = checkpoint_tf.export_torch_run(tmp_path / "tf_run", tmp_path / "torch_run")
    assert out == tmp_path / "torch_run" / "checkpoint" / "best_checkpoint"
    tmodel, targs = load_trained_model(tmp_path / "torch_run")  # the PyTorch evaluator's loader
    x = rng.standard_normal((2, 11, 8)).astype(np.float32)
    d = np.array([1, 0])
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x), torch.from_numpy(d)).numpy()
    assert ref.shape == (2, 5, 41) and list(targs.dataset.sessions) == list(args.dataset.sessions)
    assert np.abs(ref - model(tf.constant(x), tf.constant(d)).numpy()).max() < 1e-5
    # ... and the PyTorch checkpoint reads back into a fresh Keras model (init_checkpoint_path's path)
    back = checkpoint_tf.load(out)
    assert back["format"] == "torch" and back["val_PER"] == 0.25
    fresh = build_model_tf(args).build_for()
    torch_to_tf(fresh, back["model_state_dict"])
    np.testing.assert_array_equal(fresh(tf.constant(x), tf.constant(d)).numpy(),
                                  model(tf.constant(x), tf.constant(d)).numpy())


def test_unreadable_checkpoints_are_one_clear_error(tmp_path):
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk"):
        checkpoint_tf.load(tmp_path / "junk")
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint_tf.load(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="args.yaml"):
        checkpoint_tf.export_torch_run(tmp_path, tmp_path / "out")
