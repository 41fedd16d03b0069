"""The TF trainer on synthetic ``tiny``: one step (fp32 and mixed_bfloat16, both model kinds), a short run
that lowers the loss, resume, the output layout, the CLI's one-line errors and evaluate_model_tf."""

from __future__ import annotations

import csv
import pickle

import numpy as np
import pytest
import tensorflow as tf

from model_training_nnn_tpu.optim_tf import set_learning_rates
from model_training_nnn_tpu.trainer_tf import TFTrainer
from tests.model_training_nnn_tpu.conftest import tiny_tf_config

SUBSET = "[" + ",".join(str(i) for i in range(16)) + "]"  # 16 features: a cheap triple model (noise GRU 224 units)


def _step_changes(trainer: TFTrainer, step: int = 5):
    """One optimizer step at ``step`` (lr > 0 after warmup starts); returns (loss, norm, days, changed paths)."""
    before = [v.numpy().copy() for v in trainer.variables]
    batch = next(iter(trainer._train_dataset()))
    set_learning_rates(trainer.optimizers, trainer.args, step)
    trainer.grl_lambda.assign(trainer._grl_value(step))
    loss, norm = trainer._step_fn(batch, tf.constant(step, tf.int64))
    days = set(batch["day_indices"].numpy()[batch["valid"].numpy() > 0].tolist())
    changed = [v for v, b in zip(trainer.variables, before) if not np.array_equal(v.numpy(), b)]
    return float(loss), float(norm), days, changed


def _has(variables, subset) -> bool:
    return any(v is w for v in variables for w in subset)


@pytest.mark.parametrize("precision,kind", [("fp32", "gru"), ("bf16", "triple")])
def test_one_training_step(tiny_data, tmp_path, precision, kind):
    extra = {"tf_precision": precision, "num_training_batches": 3}
    if kind == "triple":
        extra.update({"model.architecture": "triple_gru", "model.n_input_features": 16, "dataset.feature_subset": SUBSET,
                      "model.patch_size": 14, "model.patch_stride": 4, "model.n_noise_layers": 1,
                      "model.n_clean_layers": 1, "model.n_noisy_layers": 1})  # one layer each: less to trace
    trainer = TFTrainer(tiny_tf_config(tiny_data, tmp_path / "run", **extra), strategy=tf.distribute.get_strategy())
    try:
        assert trainer.policy == ("mixed_bfloat16" if precision == "bf16" else "float32")
        assert all(v.dtype == "float32" for v in trainer.variables)  # fp32 master weights in both policies
        loss, norm, days, changed = _step_changes(trainer)
        assert 5 < loss < 1e4 and 0 < norm < 1e6  # a CTC NLL of random logits over tens of frames
        absent = {d for d in range(3) if d not in days}
        assert len(days) == 2 and len(absent) == 1
        for v in trainer.variables:
            day = v.path.rsplit("_", 1)[-1] if "/day_" in v.path else None
            if day is not None and int(day) in absent:
                assert not _has(changed, [v]), v.path  # a day without trials keeps its weights (PyTorch: no grad)
        assert any(v.path.endswith("kernel") for v in changed) and any(v.path.endswith("h0") for v in changed)
        if kind == "triple":
            m = trainer.model
            for part in (m.noise_model, m.clean_speech_model, m.noisy_speech_model):
                assert _has(changed, part.gru.trainable_variables), part.name
            assert m.clean_speech_model.out.compute_dtype == "bfloat16"
    finally:
        trainer.close()


def test_tiny_training_lowers_loss_resume_and_evaluate(tiny_data, tmp_path):
    from model_training_nnn_tpu import evaluate_model_tf

    out = tmp_path / "run"
    extra = {"num_training_batches": 24, "lr_decay_steps": 24, "lr_decay_steps_day": 24, "batches_per_val_step": 12}
    first = TFTrainer(tiny_tf_config(tiny_data, out, **extra), strategy=tf.distribute.get_strategy())
    first.train(stop_at_batch=11)  # validates at 0, then stops as a kill would after batch 11
    first.close()
    ck = out / "checkpoint"
    assert {p.name for p in ck.iterdir()} >= {"args.yaml", "best_checkpoint", "last_checkpoint", "val_metrics.pkl"}
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files
    with open(ck / "last_checkpoint", "rb") as fh:
        last = pickle.load(fh)
    assert last["step"] == 12 and len(last["train_losses"]) == 12 and last["format"] == "b2txt_tf/1"

    second = TFTrainer(tiny_tf_config(tiny_data, out, resume="true", **extra), strategy=tf.distribute.get_strategy())
    assert second.start_step == 12
    hist = second.train()
    second.close()
    losses = hist["train_losses"]
    assert len(losses) == 24 and len(hist["val_PERs"]) == 3  # val at 0 (before the stop), 12 and 23
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4]), losses  # measured ~0.4x
    log = (out / "training_log").read_text()
    assert "Train batch 0:" in log and "Val batch 23: PER" in log and "resuming at batch 12" in log

    with open(ck / "val_metrics.pkl", "rb") as fh:
        m = pickle.load(fh)
    assert 0 <= m["avg_PER"] < 1.5 and sum(len(s) for s in m["decoded_seqs"]) == 7  # tiny has 7 val trials

    rc = evaluate_model_tf.main(["--model_path", str(out), "--data_dir", str(tiny_data / "hdf5_data_final"),
                                 "--eval_type", "val", "--lm", "none", "--gpu_number", "-1",
                                 "--csv_path", str(tiny_data / "t15_copyTaskData_description.csv")])
    assert rc == 0
    (csv_path,) = out.glob("baseline_rnn_val_greedy_phonemes_*.csv")  # --lm none: not a submission
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["id", "text"] and len(rows) == 8
    assert [int(r[0]) for r in rows[1:]] == list(range(7)) and all(r[1].strip() for r in rows[1:])


def test_cli_bad_input_is_one_line(tiny_data, tmp_path, capsys):
    from model_training_nnn_tpu import evaluate_model_tf, train_model_tf
    from tests.model_training.conftest import tiny_overrides

    rc = train_model_tf.main(tiny_overrides(tiny_data, tmp_path / "x", **{"dataset.days_per_batch": 9}))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "days_per_batch" in err and "\n" not in err
    rc = evaluate_model_tf.main(["--model_path", str(tmp_path / "missing"), "--lm", "none", "--gpu_number", "-1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "args.yaml" in err and "\n" not in err
    # reported: tf_precision=fp8 was a traceback and left an output_dir behind; right: one line, nothing written
    rc = train_model_tf.main(tiny_overrides(tiny_data, tmp_path / "fp8", **{"tf_precision": "fp8"}))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: tf_precision: expected auto, bf16 or fp32, got 'fp8'"
    assert not (tmp_path / "fp8").exists()


def test_lr_scale_noise_and_noisy_scale_their_sub_models(tiny_data, tmp_path):
    """adversarial.lr_scale_noise / lr_scale_noisy (the nnn small config sets lr_scale_noise: 0.1) were ignored
    by the TF port (a warning said so); now each sub-model's groups run at lr_max times its scale."""
    extra = {"num_training_batches": 3, "model.architecture": "triple_gru", "model.n_input_features": 16,
             "dataset.feature_subset": SUBSET, "model.patch_size": 14, "model.patch_stride": 4,
             "model.n_noise_layers": 1, "model.n_clean_layers": 1, "model.n_noisy_layers": 1,
             "+adversarial.lr_scale_noise": 0.1, "+adversarial.lr_scale_noisy": 0.5}
    trainer = TFTrainer(tiny_tf_config(tiny_data, tmp_path / "run", **extra), strategy=tf.distribute.get_strategy())
    try:
        opts = trainer.optimizers
        assert sorted(opts) == ["bias", "bias:noise_model", "bias:noisy_speech_model", "day_layer",
                                "day_layer:noise_model", "other", "other:noise_model", "other:noisy_speech_model"]
        set_learning_rates(opts, trainer.args, 500)
        lr = {name: float(opt.learning_rate.numpy()) for name, (opt, _) in opts.items()}
        assert lr["other:noise_model"] == pytest.approx(0.1 * lr["other"], rel=1e-6)
        assert lr["bias:noisy_speech_model"] == pytest.approx(0.5 * lr["bias"], rel=1e-6)
        assert lr["day_layer:noise_model"] == pytest.approx(0.1 * lr["day_layer"], rel=1e-6)
        assert lr["other"] > 0
        m = trainer.model
        noise = {id(v) for v in m.noise_model.trainable_variables}
        for name, (_, idx) in opts.items():  # every variable sits in its sub-model's groups
            assert all((id(trainer.variables[i]) in noise) == name.endswith(":noise_model") for i in idx), name
    finally:
        trainer.close()
