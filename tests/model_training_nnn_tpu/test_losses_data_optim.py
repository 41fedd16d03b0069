"""CTC, augmentation, batch padding and AdamW of the TF port against the PyTorch baseline's."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch

from model_training.optim import cosine_lr_factor
from model_training_nnn_tpu.dataset_tf import (
    BatchShape,
    apply_cut,
    batch_cut,
    pad_batch,
    smooth_tf,
    transform_data_tf,
)
from model_training_nnn_tpu.losses import adjusted_lens, ctc_per_trial
from model_training_nnn_tpu.optim_tf import TorchAdamW, group_of, lr_factor
from nejm_b2txt_utils.augmentation import gauss_smooth


def _ctc_batch(seed=0, b=5, p=30, c=41):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((b, p, c)).astype(np.float32) * 2
    label_lens = np.array([3, 7, 1, 12, 5])[:b]
    logit_lens = np.array([30, 25, 9, 30, 14])[:b]
    labels = np.zeros((b, 500), np.int64)
    for i, n in enumerate(label_lens):
        labels[i, :n] = rng.integers(1, c, n)
    return logits, labels, label_lens, logit_lens


@pytest.mark.parametrize("dense", [False, True])
def test_ctc_equals_pytorch(dense):
    logits, labels, label_lens, logit_lens = _ctc_batch()
    ref = torch.nn.CTCLoss(blank=0, reduction="none")(
        torch.from_numpy(logits).log_softmax(2).permute(1, 0, 2), torch.from_numpy(labels),  # (P, B, C)
        torch.from_numpy(logit_lens), torch.from_numpy(label_lens)).numpy()
    ours = ctc_per_trial(tf.constant(logits), tf.constant(labels), tf.constant(label_lens), tf.constant(logit_lens),
                         dense=dense).numpy()
    assert ours.shape == (5,) and np.all(ref > 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)  # measured max relative diff ~1e-6
    assert abs(ours.mean() - ref.mean()) < 1e-3


def test_ctc_takes_bf16_logits():
    logits, labels, label_lens, logit_lens = _ctc_batch()
    out = ctc_per_trial(tf.cast(tf.constant(logits), tf.bfloat16), tf.constant(labels), tf.constant(label_lens),
                        tf.constant(logit_lens))
    assert out.dtype == tf.float32 and np.all(np.isfinite(out.numpy()))


def test_adjusted_lens_truncate_like_torch():
    n = np.array([14, 15, 17, 18, 100, 10])
    ref = ((torch.from_numpy(n) - 14) / 4 + 1).to(torch.int32).numpy()
    np.testing.assert_array_equal(adjusted_lens(tf.constant(n), 14, 4).numpy(), ref)
    np.testing.assert_array_equal(ref, [1, 1, 1, 2, 22, 0])


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_smoothing_equals_pytorch(padding):
    x = np.random.default_rng(1).standard_normal((2, 40, 6)).astype(np.float32)
    ref = gauss_smooth(torch.from_numpy(x), padding=padding).numpy()
    ours = smooth_tf(tf.constant(x), 2.0, 100, padding).numpy()
    assert ours.shape == ref.shape == ((2, 40, 6) if padding == "same" else (2, 32, 6))
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_random_cut_shifts_and_repads():
    x = np.arange(2 * 6 * 2, dtype=np.float32).reshape(2, 6, 2) + 1
    out, n = apply_cut(tf.constant(x), tf.constant([6, 4]), tf.constant(2))
    np.testing.assert_array_equal(out.numpy()[:, :4], x[:, 2:])
    np.testing.assert_array_equal(out.numpy()[:, 4:], 0)
    np.testing.assert_array_equal(n.numpy(), [4, 2])
    cuts = {batch_cut(1, i, 3) for i in range(50)}
    assert cuts == {0, 1, 2} and batch_cut(1, 7, 3) == batch_cut(1, 7, 3) and batch_cut(1, 7, 0) == 0


def test_train_transform_order_and_determinism():
    """Noise only (smoothing off): white noise std 1 + offset std 0.2 -> per-element std ~ sqrt(1.04); the
    stateless seed makes it repeatable; then the cut shifts the noisy features."""
    args = {"white_noise_std": 1.0, "constant_offset_std": 0.2, "random_cut": 3, "smooth_data": False}
    x = tf.zeros((8, 50, 16))
    a, n = transform_data_tf(x, tf.fill([8], 50), tf.constant(0), args, "train", tf.constant([1, 2]))
    b, _ = transform_data_tf(x, tf.fill([8], 50), tf.constant(0), args, "train", tf.constant([1, 2]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert 0.95 < float(tf.math.reduce_std(a)) < 1.1 and np.all(n.numpy() == 50)
    c, n2 = transform_data_tf(x, tf.fill([8], 50), tf.constant(2), args, "train", tf.constant([1, 2]))
    np.testing.assert_array_equal(c.numpy()[:, :48], a.numpy()[:, 2:])
    assert np.all(n2.numpy() == 48)
    v, _ = transform_data_tf(x + 1, tf.fill([8], 50), tf.constant(2), args, "val", tf.constant([1, 2]))
    np.testing.assert_array_equal(v.numpy(), np.ones((8, 50, 16), np.float32))  # val: no augmentation


def test_pad_batch_fixed_shapes():
    batch = {"input_features": torch.ones(3, 20, 4), "seq_class_ids": torch.ones(3, 7, dtype=torch.int64),
             "n_time_steps": torch.tensor([20, 18, 15]), "phone_seq_lens": torch.tensor([7, 5, 2]),
             "day_indicies": torch.tensor([1, 1, 2])}
    out = pad_batch(batch, BatchShape(batch=4, time=32, labels=10, features=4), cut=1)
    assert out["input_features"].shape == (4, 32, 4) and out["seq_class_ids"].shape == (4, 10)
    np.testing.assert_array_equal(out["valid"], [1, 1, 1, 0])
    np.testing.assert_array_equal(out["n_time_steps"], [20, 18, 15, 32])
    assert out["input_features"][:3, 20:].sum() == 0 and int(out["cut"]) == 1
    with pytest.raises(ValueError, match="static_max_time_steps"):
        pad_batch(batch, BatchShape(batch=4, time=16, labels=10, features=4))


def test_torch_adamw_matches_pytorch():
    """Three steps with eps 0.1 and weight decay; a zero-gradient step is skipped with skip_zero_grads."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    for skip in (False, True):
        gs = [grads[0], np.zeros_like(w0), grads[2]] if skip else grads
        p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        ref_opt = torch.optim.AdamW([p], lr=0.01, eps=0.1, weight_decay=0.05)
        v = tf.Variable(w0.copy())
        opt = TorchAdamW(0.01, epsilon=0.1, decoupled_weight_decay=0.05, skip_zero_grads=skip)
        for g in gs:
            if not (skip and not g.any()):  # PyTorch: a parameter without a gradient is skipped
                p.grad = torch.from_numpy(g)
                ref_opt.step()
            opt.apply([tf.constant(g)], [v])
        np.testing.assert_allclose(v.numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_groups_and_schedule():
    assert group_of("gru_decoder/gru/gru_0/gru_cell/bias") == "bias"
    assert group_of("gru_decoder/out/bias") == "bias"
    assert group_of("day/day_weight_3") == "day_layer" and group_of("day/day_bias_0") == "day_layer"
    assert group_of("gru/h0") == "other" and group_of("gru_decoder/out/kernel") == "other"
    args = {"lr_scheduler_type": "cosine", "lr_max": 0.005, "lr_min": 0.0001, "lr_warmup_steps": 1000,
            "lr_decay_steps": 120000, "lr_max_day": 0.005, "lr_min_day": 0.0001, "lr_warmup_steps_day": 10,
            "lr_decay_steps_day": 100}
    assert lr_factor(args, 0, False) == 0.0 and lr_factor(args, 500, False) == 0.5
    assert lr_factor(args, 60500, False) == cosine_lr_factor(60500, 0.02, 1000, 120000)
    assert lr_factor(args, 200, True) == pytest.approx(0.02)
    lin = {**args, "lr_scheduler_type": "linear", "lr_decay_steps": 100}
    assert lr_factor(lin, 50, False) == pytest.approx(0.51) and lr_factor(lin, 500, False) == pytest.approx(0.02)
