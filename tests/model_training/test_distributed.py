"""A 2-process DDP run (torchrun, gloo on CPU) matches the single-process run on the same batches."""

import os
import subprocess
import sys

import pytest
import torch

from model_training.checkpoint import load_checkpoint_file
from model_training.rnn_trainer import BrainToTextDecoder_Trainer

from .conftest import REPO, tiny_config, to_yaml

DETERMINISTIC = {"dataset.data_transforms.white_noise_std": 0.0, "dataset.data_transforms.constant_offset_std": 0.0,
                 "dataset.data_transforms.random_cut": 0, "model.input_network.input_layer_dropout": 0.0,
                 "num_training_batches": 3, "batches_per_val_step": 100, "batches_per_train_log": 1,
                 "lr_warmup_steps": 1, "lr_warmup_steps_day": 1}


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tiny_data, tmp_path):
    single_cfg = tiny_config(tiny_data, tmp_path / "single", **DETERMINISTIC)
    trainer = BrainToTextDecoder_Trainer(single_cfg)
    single = trainer.train()
    trainer.close()

    cfg_path = to_yaml(tiny_config(tiny_data, tmp_path / "unused", **DETERMINISTIC), tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "model_training" / "train_model.py"), "--config", str(cfg_path),
         f"output_dir={tmp_path / 'ddp'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_checkpoint_file(tmp_path / "ddp" / "checkpoint" / "last_checkpoint")
    assert ddp["step"] == 3
    torch.testing.assert_close(torch.tensor(ddp["train_losses"]), torch.tensor(single["train_losses"]),
                               rtol=1e-4, atol=1e-4)
    # the updates match too (last batch's weights)
    ref = trainer.model.state_dict()
    for key, value in ddp["model_state_dict"].items():
        torch.testing.assert_close(value, ref[key.removeprefix("_orig_mod.")], rtol=1e-4, atol=1e-5)
    log = (tmp_path / "ddp" / "training_log").read_text()
    assert log.count("Train batch 0:") == 1  # only rank 0 logs
