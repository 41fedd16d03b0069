"""The GRL schedule and the output-frame rule agree between the PyTorch and TensorFlow trainers (one
implementation each, in ``model_training_nnn/adversarial.py`` and ``nejm_b2txt_utils/t15_hdf5.py``), and the
TF trainer reads adversarial settings as strictly as the PyTorch one."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch

from model_training.rnn_model import output_frames
from model_training_nnn.adversarial import GRL_SCHEDULES, adversarial_settings
from model_training_nnn.rnn_trainer import NNNTrainer
from model_training_nnn_tpu.losses import adjusted_lens
from model_training_nnn_tpu.trainer_tf import TFTrainer
from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.t15_hdf5 import n_output_frames
from tests.model_training_nnn_tpu.conftest import tiny_tf_config

N_BATCHES = 40


def _schedules(adv: dict) -> tuple[list[float], list[float]]:
    """Lambda per step 0..N_BATCHES-1 as each trainer computes it (PyTorch: None = 0 skipped = 0.0)."""
    torch_trainer = NNNTrainer.__new__(NNNTrainer)
    torch_trainer.adv, torch_trainer.n_batches, torch_trainer.device = adv, N_BATCHES, torch.device("cpu")
    tf_trainer = TFTrainer.__new__(TFTrainer)
    tf_trainer.adv, tf_trainer.n_batches = adv, N_BATCHES
    pt = [torch_trainer.grl_argument(s) for s in range(N_BATCHES)]
    return [0.0 if v is None else float(v) for v in pt], [tf_trainer._grl_value(s) for s in range(N_BATCHES)]


@pytest.mark.parametrize("warmup", [0, 1, 7, N_BATCHES * 2])
@pytest.mark.parametrize("schedule", GRL_SCHEDULES)
def test_both_trainers_follow_one_grl_schedule(schedule, warmup):
    adv = adversarial_settings({"adversarial": {"grl_schedule": schedule, "grl_warmup_steps": warmup,
                                                "grl_lambda": 0.8, "grl_gamma": 5.0}})
    pt, tf_values = _schedules(adv)
    np.testing.assert_allclose(pt, tf_values, rtol=1e-6, atol=0)  # torch holds lambda as float32
    assert max(tf_values) <= 0.8 + 1e-9 and tf_values[-1] > 0.0


def test_tf_linear_warmup_zero_gives_lambda_at_step_0():
    """Reported: with grl_warmup_steps 0 the TF trainer gave 0 at step 0; PyTorch (and now TF) give lambda."""
    adv = adversarial_settings({"adversarial": {"grl_schedule": "linear_warmup", "grl_warmup_steps": 0,
                                                "grl_lambda": 0.6}})
    _, tf_values = _schedules(adv)
    assert tf_values[0] == 0.6 and tf_values[5] == 0.6


def test_tf_unknown_grl_schedule_is_a_config_error_before_any_output(tiny_data, tmp_path):
    """Reported: an unknown grl_schedule silently became dann in TF; PyTorch raised ConfigError."""
    cfg = tiny_tf_config(tiny_data, tmp_path / "run", **{"model.architecture": "triple_gru",
                                                          "adversarial.grl_schedule": "cosine"})
    with pytest.raises(ConfigError, match="adversarial.grl_schedule: expected dann, constant or linear_warmup, "
                                          "got 'cosine'"):
        TFTrainer(cfg, strategy=tf.distribute.get_strategy())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("patch_size,patch_stride", [(14, 4), (1, 4), (3, 2), (0, 0)])
def test_output_frames_one_rule_two_tensor_twins(patch_size, patch_stride):
    n = np.arange(0, 60)
    want = [n_output_frames(int(x), patch_size, patch_stride) for x in n]
    assert adjusted_lens(tf.constant(n), patch_size, patch_stride).numpy().tolist() == want
    assert output_frames(torch.from_numpy(n), patch_size, patch_stride).tolist() == want
