import json
import os
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from model_training.checkpoint import load_checkpoint_file, load_trained_model
from model_training.rnn_trainer import BrainToTextDecoder_Trainer

from .test_rnn_model import original_key_list


def run(cfg, **train_kw):
    trainer = BrainToTextDecoder_Trainer(cfg)
    try:
        return trainer, trainer.train(**train_kw)
    finally:
        trainer.close()


@pytest.mark.slow
def test_training_on_tiny_lowers_loss_and_per(cfg_factory):
    n = 150
    cfg = cfg_factory("learn", num_training_batches=n, lr_decay_steps=n, lr_decay_steps_day=n,
                      lr_warmup_steps=15, lr_warmup_steps_day=15, batches_per_val_step=75,
                      **{"model.n_units": 96})
    trainer, res = run(cfg)
    losses = res["train_losses"]
    assert len(losses) == n and len(res["val_PERs"]) == 3  # validation at 0, 75 and the last batch
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:5])
    assert res["val_PERs"][0] > 1.2  # batch 0 trains with lr 0: untrained, mostly insertions
    assert min(res["val_PERs"]) < 0.9  # better than emitting nothing (PER 1.0)
    out = cfg.output_dir
    best = load_checkpoint_file(f"{out}/checkpoint/best_checkpoint")
    assert best["val_PER"] == min(res["val_PERs"])
    assert list(best["model_state_dict"]) == ["_orig_mod." + k for k in original_key_list(3, 1)]
    assert set(best) >= {"optimizer_state_dict", "scheduler_state_dict", "val_loss"}
    with open(f"{out}/checkpoint/val_metrics.pkl", "rb") as fh:
        metrics = pickle.load(fh)
    assert metrics["avg_PER"] == best["val_PER"] and set(metrics["day_PERs"]) == {1, 2}
    assert len(metrics["logits"]) == len(metrics["decoded_seqs"]) == 2  # one batch per val day
    log = (cfg.output_dir + "/training_log")
    text = open(log).read()
    assert "Train batch 0: loss:" in text and "Val batch 149: PER (avg):" in text and "t15.2025.04.13 val PER" in text
    split = json.load(open(f"{out}/train_val_trials.json"))
    assert split["val"]["0"]["trials"] == [] and len(split["train"]["0"]["trials"]) == 20
    args = OmegaConf.load(f"{out}/checkpoint/args.yaml")
    assert list(args.dataset.sessions) == list(cfg.dataset.sessions) and args.checkpoint_dir.endswith("checkpoint")

    # the reloaded best checkpoint gives bit-identical logits
    model, _ = load_trained_model(out, "cpu")
    trainer.model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in best["model_state_dict"].items()})
    trainer.model.eval()
    x = torch.randn(2, 120, 512)
    day = torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(model(x, day), trainer.model(x, day))


def test_resume_continues_at_the_saved_step_with_identical_losses(cfg_factory):
    kw = dict(num_training_batches=12, batches_per_val_step=5)  # input dropout 0.2 and noise: RNG restored
    _, straight = run(cfg_factory("straight", **kw))
    interrupted_cfg = cfg_factory("interrupted", **kw)
    _, first = run(interrupted_cfg, stop_at_batch=6)
    assert len(first["train_losses"]) == 7
    last = load_checkpoint_file(f"{interrupted_cfg.output_dir}/checkpoint/last_checkpoint")
    assert last["step"] == 7
    with pytest.raises(FileExistsError, match="resume=true"):
        BrainToTextDecoder_Trainer(interrupted_cfg)
    resumed_cfg = OmegaConf.merge(interrupted_cfg, {"resume": True})
    trainer = BrainToTextDecoder_Trainer(resumed_cfg)
    assert trainer.start_step == 7
    second = trainer.train()
    trainer.close()
    assert second["train_losses"] == straight["train_losses"]
    assert second["val_PERs"] == straight["val_PERs"]


def test_optional_saves_early_stopping_and_init_from_checkpoint(cfg_factory):
    cfg = cfg_factory("saves", num_training_batches=6, batches_per_val_step=2, save_all_val_steps=True,
                      save_final_model=True, early_stopping=True, early_stopping_val_steps=1,
                      lr_max=1e-9, lr_min=1e-10, lr_max_day=1e-9, lr_min_day=1e-10)
    _, res = run(cfg)
    ckpt_dir = f"{cfg.output_dir}/checkpoint"
    files = set(os.listdir(ckpt_dir))
    # validation at 0 (best) and 2 (no improvement) -> early stop after batch 2
    assert {"checkpoint_batch_0", "checkpoint_batch_2", "final_checkpoint_batch_2", "best_checkpoint",
            "last_checkpoint", "args.yaml", "val_metrics.pkl"} <= files
    assert len(res["train_losses"]) == 3
    init_cfg = cfg_factory("init", num_training_batches=2, init_from_checkpoint=True,
                           init_checkpoint_path=f"{ckpt_dir}/best_checkpoint")
    trainer = BrainToTextDecoder_Trainer(init_cfg)
    assert trainer.start_step == 0 and trainer.best_val_PER == res["val_PERs"][0]
    assert trainer.learning_rate_scheduler.last_epoch == 1  # saved after batch 0: the scheduler continues
    trainer.close()
    none_cfg = cfg_factory("none", init_checkpoint_path="None")
    assert none_cfg.init_checkpoint_path is None
