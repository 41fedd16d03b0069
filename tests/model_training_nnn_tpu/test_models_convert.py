"""Keras ports vs the PyTorch models: same weights -> same logits (fp32, max abs diff < 1e-5), both ways."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch

from model_training.rnn_model import GRUDecoder as TorchGRU
from model_training.rnn_model import patchify as torch_patchify
from model_training_nnn.rnn_model import TripleGRUDecoder as TorchTriple
from model_training_nnn_tpu.convert import tf_to_torch, to_torch, torch_to_tf
from model_training_nnn_tpu.rnn_model_tf import GRUDecoder, TripleGRUDecoder, gradient_reverse, patchify

TOL = 1e-5  # fp32; measured ~2e-7 at these sizes
KW = dict(neural_dim=8, n_units=16, n_days=3, n_classes=5, rnn_dropout=0.3, input_dropout=0.2, patch_size=3,
          patch_stride=2)


def _inputs(seed=0, b=4, t=17):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, t, 8)).astype(np.float32), np.array([0, 2, 1, 2][:b])


@pytest.mark.parametrize("kind", ["gru", "triple"])
def test_torch_to_tf_same_logits_and_back(kind):
    torch.manual_seed(1)
    if kind == "gru":
        tm, km = TorchGRU(n_layers=2, **KW).eval(), GRUDecoder(n_layers=2, **KW).build_for()
    else:
        tm, km = TorchTriple(**KW).eval(), TripleGRUDecoder(**KW).build_for()
    torch_to_tf(km, tm.state_dict())
    x, d = _inputs()
    with torch.no_grad():
        ref = tm(torch.from_numpy(x), torch.from_numpy(d), mode="full", grl_lambda=0.5) if kind == "triple" else \
            (tm(torch.from_numpy(x), torch.from_numpy(d)),)
    out = km(tf.constant(x), tf.constant(d), mode="full", grl_lambda=0.5) if kind == "triple" else \
        (km(tf.constant(x), tf.constant(d)),)
    p = (17 - 3) // 2 + 1
    for r, o in zip(ref, out):
        assert tuple(o.shape) == tuple(r.shape) and o.shape[1] == p
        assert np.abs(r.numpy() - o.numpy()).max() < TOL
    # back: the Keras weights give PyTorch the exact same state dict, and a second model the same logits
    sd = tf_to_torch(km)
    assert sorted(sd) == sorted(tm.state_dict())
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy(), err_msg=k)
    tm2 = (TorchGRU(n_layers=2, **KW) if kind == "gru" else TorchTriple(**KW)).eval()
    tm2.load_state_dict(to_torch(sd))
    with torch.no_grad():
        again = tm2(torch.from_numpy(x), torch.from_numpy(d))
    np.testing.assert_array_equal(again.numpy(), ref[0].numpy())


def test_tf_trained_weights_move_to_torch():
    """Random (non-identity) Keras weights, including day layers, round-trip to PyTorch with equal logits."""
    km = GRUDecoder(n_layers=2, **KW).build_for()
    rng = np.random.default_rng(3)
    for v in km.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.float32) * 0.3)
    tm = TorchGRU(n_layers=2, **KW).eval()
    tm.load_state_dict(to_torch(tf_to_torch(km)))
    x, d = _inputs(5)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x), torch.from_numpy(d)).numpy()
    assert np.abs(ref - km(tf.constant(x), tf.constant(d)).numpy()).max() < TOL


def test_conversion_rejects_wrong_keys():
    km = GRUDecoder(n_layers=1, **KW).build_for()
    sd = tf_to_torch(km)
    sd.pop("h0")
    with pytest.raises(KeyError, match="missing"):
        torch_to_tf(km, sd)


def test_patch_order_is_pytorch_unfold_order():
    x = np.arange(2 * 9 * 3, dtype=np.float32).reshape(2, 9, 3)
    ours = patchify(tf.constant(x), 4, 2).numpy()
    ref = torch_patchify(torch.from_numpy(x), 4, 2).numpy()
    np.testing.assert_array_equal(ours, ref)
    assert ours.shape == (2, 3, 12)
    np.testing.assert_array_equal(ours[1, 2, 3:6], x[1, 5])  # patch 2 starts at bin 4; k=1 -> bin 5


def test_day_layers_start_as_identity():
    km = GRUDecoder(n_layers=1, **KW).build_for()
    np.testing.assert_array_equal(km.day.day_weights[2].numpy(), np.eye(8, dtype=np.float32))
    np.testing.assert_array_equal(km.day.day_biases[0].numpy(), np.zeros((1, 8), np.float32))
    x = tf.constant(_inputs()[0])
    out = km.day(x, tf.constant([0, 1, 2, 1]), training=False)
    np.testing.assert_allclose(out.numpy(), tf.nn.softsign(x).numpy(), rtol=1e-6)


def test_grl_reverses_gradient_and_gives_none_for_lambda():
    lam = tf.Variable(0.7, trainable=False)
    x = tf.Variable(np.ones((2, 3), np.float32))
    w = tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(lam)
        y = tf.reduce_sum(gradient_reverse(x, lam) * w)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), -0.7 * w.numpy(), rtol=1e-6)
    assert tape.gradient(y, lam) is None
    lam.assign(0.25)  # a variable updated from the host: same traced function, new factor
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(gradient_reverse(x, lam) * w)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), -0.25 * w.numpy(), rtol=1e-6)


def test_triple_grl_sign_on_noise_model():
    """Through the triple model: the noise model's gradient of the noisy logits flips with lambda = 1, and
    lambda = 0 (skip-when-zero quirk) passes it with a + sign; the noisy decoder's gradient is unchanged."""
    km = TripleGRUDecoder(**{**KW, "rnn_dropout": 0.0, "input_dropout": 0.0}).build_for()
    x, d = (tf.constant(a) for a in _inputs())

    def grads(lam):
        with tf.GradientTape() as tape:
            _, noisy, _ = km(x, d, mode="full", grl_lambda=lam, training=True)
            loss = tf.reduce_sum(noisy ** 2)
        g = tape.gradient(loss, [km.noise_model.gru.h0, km.noisy_speech_model.gru.h0])
        return [t.numpy() for t in g]

    plus, minus, zero = grads(None), grads(1.0), grads(0.0)
    assert np.abs(plus[0]).max() > 0
    np.testing.assert_allclose(minus[0], -plus[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(zero[0], plus[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(minus[1], plus[1], rtol=1e-5, atol=1e-7)
