"""Keras 3 (TensorFlow backend) ports of the phoneme decoders (spec nnn-and-tpu §2, §6.3).

* :class:`GRUDecoder`: the baseline of ``model_training/rnn_model.py`` (day layers -> 14-bin patches ->
  stacked GRU -> 41 logits).
* :class:`NoiseModel`, :class:`CleanSpeechModel`, :class:`NoisySpeechModel` and :class:`TripleGRUDecoder`:
  the adversarial denoising decoder of ``model_training_nnn/rnn_model.py``.

The maths is the PyTorch models', so one set of weights gives the same logits in both frameworks
(``convert.py`` moves weights; the tests check the logits):

* day layers: one ``add_weight`` per day (``day_weight_{i}`` (D, D) identity, ``day_bias_{i}`` (1, D) zeros),
  stacked and gathered by ``day_idx`` (a fixed-shape gather, XLA friendly), ``x @ W + b``, softsign, dropout;
* patching: ``tf.signal.frame`` along time then a reshape, so a patch is flattened time-within-patch
  major (flat index k * D + c), PyTorch's ``unfold`` order;
* GRUs: ``keras.layers.GRU(reset_after=True)`` layers (PyTorch's formulation, two bias vectors), dropout
  between layers, a learnable ``h0`` (1, 1, H) shared by every layer; biases initialised U(+-1/sqrt(H)) as
  PyTorch does;
* GRL: :func:`gradient_reverse`, ``tf.custom_gradient``, identity forward, ``-lambda * dy`` backward, no
  gradient for lambda.

Under the ``mixed_bfloat16`` policy the compute runs in bf16 with fp32 variables; every op casts its
operands to the input's dtype (spec §2.6 rule 5), and logits come out in the compute dtype (the trainer
casts them to float32 before CTC).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from model_training.architectures import register
from model_training_nnn.adversarial import triple_gru_kwargs


def _torch_uniform(bound: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomUniform(-bound, bound)


def gradient_reverse(x: tf.Tensor, lambd) -> tf.Tensor:
    """Identity forward; backward multiplies the incoming gradient by ``-lambd`` (Ganin & Lempitsky GRL).

    Args:
        x: any tensor; its dtype is preserved.
        lambd: a Python float, tensor or non-trainable ``tf.Variable`` (read at each call, so a variable
            updated from the host changes the reversal without retracing). It gets no gradient.

    Returns:
        ``x`` unchanged (a new tensor).
    """
    lam = tf.convert_to_tensor(lambd)  # read here: the custom gradient sees a constant, never a variable

    @tf.custom_gradient
    def _reverse(t):
        def grad(dy):
            return -tf.cast(lam, dy.dtype) * dy
        return tf.identity(t), grad

    return _reverse(x)


def patchify(x: tf.Tensor, patch_size: int, patch_stride: int) -> tf.Tensor:
    """``[B, T, D]`` -> ``[B, P, patch_size * D]``, P = (T - patch_size) // patch_stride + 1.

    Args:
        x: features, batch first.
        patch_size: bins per patch (0 = no patching).
        patch_stride: bins between patch starts.

    Returns:
        Patches flattened time-within-patch major (index k * D + c), PyTorch's unfold order; tail bins
        that fill no window are dropped.
    """
    if patch_size <= 0:
        return x
    d = x.shape[-1]
    frames = tf.signal.frame(x, patch_size, patch_stride, axis=1)  # (B, P, patch_size, D)
    return tf.reshape(frames, (tf.shape(x)[0], tf.shape(frames)[1], patch_size * d))  # (B, P, patch_size * D)


class DayLayers(keras.layers.Layer):
    """Per-session affine input layers: ``softsign(x @ W[day] + b[day])`` then dropout."""

    def __init__(self, n_days: int, neural_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_days, self.neural_dim, self.rate = n_days, neural_dim, dropout
        self.day_weights = [self.add_weight(shape=(neural_dim, neural_dim), initializer="identity",
                                            name=f"day_weight_{i}") for i in range(n_days)]
        self.day_biases = [self.add_weight(shape=(1, neural_dim), initializer="zeros", name=f"day_bias_{i}")
                           for i in range(n_days)]
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, day_idx: tf.Tensor, training: bool = False) -> tf.Tensor:
        w = tf.gather(tf.stack([tf.cast(v, x.dtype) for v in self.day_weights]), day_idx)  # (B, D, D)
        b = tf.gather(tf.stack([tf.cast(v, x.dtype) for v in self.day_biases]), day_idx)  # (B, 1, D)
        x = tf.nn.softsign(tf.linalg.matmul(x, w) + b)  # (B, T, D)
        return self.dropout(x, training=training) if self.rate > 0 else x


class StackedGRU(keras.layers.Layer):
    """``n_layers`` GRU layers (PyTorch formulation), dropout between layers, learnable ``h0`` (1, 1, H)."""

    def __init__(self, n_units: int, n_layers: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_units, self.n_layers, self.rate = n_units, n_layers, dropout
        bound = 1.0 / math.sqrt(n_units)
        self.layers_ = [keras.layers.GRU(n_units, return_sequences=True, return_state=True, reset_after=True,
                                         recurrent_dropout=0.0, kernel_initializer="glorot_uniform",
                                         recurrent_initializer="orthogonal", bias_initializer=_torch_uniform(bound),
                                         name=f"gru_{k}") for k in range(n_layers)]
        self.dropout = keras.layers.Dropout(dropout)
        # PyTorch's xavier_uniform_ on (1, 1, H): fan_in = fan_out = H -> U(+-sqrt(3 / H)).
        self.h0 = self.add_weight(shape=(1, 1, n_units), initializer=_torch_uniform(math.sqrt(3.0 / n_units)),
                                  name="h0")

    def call(self, x: tf.Tensor, states: tf.Tensor | None = None, training: bool = False):
        """``x [B, P, I]`` -> (outputs ``[B, P, H]``, final states ``[n_layers, B, H]``)."""
        if states is None:
            h = tf.tile(tf.cast(self.h0[0], x.dtype), (tf.shape(x)[0], 1))  # (B, H)
            states = [h] * self.n_layers
        else:
            states = tf.unstack(tf.cast(states, x.dtype), num=self.n_layers)  # n_layers x (B, H)
        finals = []
        for k, gru in enumerate(self.layers_):
            if k > 0 and self.rate > 0:
                x = self.dropout(x, training=training)
            x, h = gru(x, initial_state=[states[k]], training=training)
            finals.append(h)
        return x, tf.stack(finals)  # (B, P, H), (n_layers, B, H)


class GRUDecoder(keras.Model):
    """The baseline decoder (``model_training.rnn_model.GRUDecoder``), same constructor and outputs."""

    def __init__(self, neural_dim: int, n_units: int, n_days: int, n_classes: int, rnn_dropout: float = 0.0,
                 input_dropout: float = 0.0, n_layers: int = 5, patch_size: int = 0, patch_stride: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.neural_dim, self.n_units, self.n_days, self.n_classes = neural_dim, n_units, n_days, n_classes
        self.n_layers, self.patch_size, self.patch_stride = n_layers, patch_size, patch_stride
        self.input_size = neural_dim * patch_size if patch_size > 0 else neural_dim
        self.day = DayLayers(n_days, neural_dim, input_dropout, name="day")
        self.gru = StackedGRU(n_units, n_layers, rnn_dropout, name="gru")
        self.out = keras.layers.Dense(n_classes, kernel_initializer="glorot_uniform",
                                      bias_initializer=_torch_uniform(1.0 / math.sqrt(n_units)), name="out")

    def build(self, *args, **kwargs):
        """Sub-layers build on the first call (Keras's input-shape build does not fit a two-input call)."""
        self.built = True

    def call(self, x, day_idx, states=None, return_state: bool = False, training: bool = False):
        """``x [B, T, neural_dim]``, ``day_idx [B]`` int -> logits ``[B, P, n_classes]`` (and ``[L, B, H]``)."""
        x = patchify(self.day(x, day_idx, training=training), self.patch_size, self.patch_stride)
        output, hidden = self.gru(x, states, training=training)
        logits = self.out(output)
        return (logits, hidden) if return_state else logits

    def build_for(self, batch: int = 1, time_steps: int | None = None) -> GRUDecoder:
        """Create every variable by one forward pass on zeros (Keras builds lazily)."""
        t = time_steps or max(self.patch_size, 1)
        self(tf.zeros((batch, t, self.neural_dim)), tf.zeros((batch,), tf.int32))
        return self


class _SubModel(keras.layers.Layer):
    """One part of the triple model: optional day layers + patching, a StackedGRU, optional linear head."""

    def __init__(self, neural_dim: int, n_units: int, n_layers: int, n_days: int = 0, n_classes: int = 0,
                 rnn_dropout: float = 0.0, input_dropout: float = 0.0, patch_size: int = 0, patch_stride: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.neural_dim, self.n_units, self.n_layers = neural_dim, n_units, n_layers
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.input_size = neural_dim * patch_size if patch_size > 0 else neural_dim
        self.day = DayLayers(n_days, neural_dim, input_dropout, name="day") if n_days else None
        self.gru = StackedGRU(n_units, n_layers, rnn_dropout, name="gru")
        self.out = keras.layers.Dense(n_classes, kernel_initializer="glorot_uniform",
                                      bias_initializer=_torch_uniform(1.0 / math.sqrt(n_units)),
                                      name="out") if n_classes else None

    def build(self, *args, **kwargs):
        """Sub-layers build on the first call."""
        self.built = True

    def preprocess(self, x: tf.Tensor, day_idx: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Day affine, softsign, dropout, patching: ``[B, T, D]`` -> ``[B, P, patch_size * D]``."""
        return patchify(self.day(x, day_idx, training=training), self.patch_size, self.patch_stride)

    def run(self, x: tf.Tensor, states=None, training: bool = False):
        """GRU (+ head) on already processed input: ``(outputs [B, P, H or C], states [L, B, H])``."""
        output, hidden = self.gru(x, states, training=training)
        return (self.out(output) if self.out is not None else output), hidden

    def call(self, x, day_idx=None, states=None, training: bool = False):
        if self.day is not None:
            x = self.preprocess(x, day_idx, training=training)
        return self.run(x, states, training=training)


class NoiseModel(_SubModel):
    """Own day layers, patching, a GRU whose hidden size is the patched input size; no head: the noise estimate."""


class CleanSpeechModel(_SubModel):
    """Own day layers (used by the triple model's shared preprocessing), a GRU and the phoneme head."""


class NoisySpeechModel(_SubModel):
    """No day layers: a GRU and a phoneme head reading the (gradient-reversed) noise estimate."""


class TripleGRUDecoder(keras.Model):
    """Noise model + clean decoder on the denoised input + adversarial noisy decoder (spec §2).

    ``mode='full'`` returns ``(clean_logits [B, P, C], noisy_logits [B, P, C], noise_output [B, P, patch * D])``;
    ``mode='inference'`` (the default) returns ``clean_logits``, or ``(clean_logits, (noise_state, clean_state))``
    with ``return_state`` (``states`` takes that pair, or the clean state alone), as the PyTorch model. ``grl_lambda`` (float, tensor or ``tf.Variable``; None = no GRL)
    scales the reversed gradient; with ``grl_skip_when_zero`` a lambda of exactly 0 means no reversal
    (the fork's quirk, spec §2.5): the noise model then gets the noisy loss's gradient with a + sign.
    """

    def __init__(self, neural_dim: int, n_units: int, n_days: int, n_classes: int, rnn_dropout: float = 0.0,
                 input_dropout: float = 0.0, patch_size: int = 0, patch_stride: int = 0, n_noise_layers: int = 2,
                 n_clean_layers: int = 3, n_noisy_layers: int = 2, noise_units: int | None = None,
                 noisy_units: int | None = None, grl_skip_when_zero: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.neural_dim, self.n_units, self.n_days, self.n_classes = neural_dim, n_units, n_days, n_classes
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.grl_skip_when_zero = grl_skip_when_zero
        self.input_size = neural_dim * patch_size if patch_size > 0 else neural_dim
        if (noise_units or self.input_size) != self.input_size:
            raise ValueError(f"noise_units: must equal patch_size * neural_dim = {self.input_size} (the noise "
                             f"estimate is subtracted from the patched input), got {noise_units}")
        common = dict(neural_dim=neural_dim, rnn_dropout=rnn_dropout, patch_size=patch_size, patch_stride=patch_stride)
        self.noise_model = NoiseModel(n_units=self.input_size, n_layers=n_noise_layers, n_days=n_days,
                                      input_dropout=input_dropout, name="noise_model", **common)
        self.clean_speech_model = CleanSpeechModel(n_units=n_units, n_layers=n_clean_layers,
                                                   n_days=n_days, n_classes=n_classes, input_dropout=input_dropout,
                                                   name="clean_speech_model", **common)
        self.noisy_speech_model = NoisySpeechModel(n_units=noisy_units or n_units, n_layers=n_noisy_layers,
                                                   n_classes=n_classes, name="noisy_speech_model", **common)

    def build(self, *args, **kwargs):
        """Sub-layers build on the first call (see ``GRUDecoder.build``)."""
        self.built = True

    def call(self, x, day_idx, states=None, return_state: bool = False, grl_lambda=None, mode: str = "inference",
             training: bool = False):
        if mode not in ("full", "inference"):
            raise ValueError(f"mode: expected 'full' or 'inference', got {mode!r}")
        noise_state = clean_state = None
        if isinstance(states, (tuple, list)):
            noise_state, clean_state = states
        elif states is not None:
            clean_state = states
        noise_output, noise_hidden = self.noise_model(x, day_idx, noise_state, training=training)  # (B, P, N)
        x_processed = self.clean_speech_model.preprocess(x, day_idx, training=training)  # (B, P, N)
        denoised = x_processed - tf.cast(noise_output, x_processed.dtype)
        clean_logits, clean_hidden = self.clean_speech_model.run(denoised, clean_state, training=training)
        if mode == "inference":
            return (clean_logits, (noise_hidden, clean_hidden)) if return_state else clean_logits
        noisy_input = noise_output
        if grl_lambda is not None:
            lam = tf.cast(tf.convert_to_tensor(grl_lambda), tf.float32)
            if self.grl_skip_when_zero:  # lambda == 0: no reversal, i.e. the gradient passes with factor +1
                lam = tf.where(tf.equal(lam, 0.0), -1.0, lam)
            noisy_input = gradient_reverse(noise_output, lam)
        noisy_logits, _ = self.noisy_speech_model.run(tf.cast(noisy_input, x_processed.dtype), training=training)
        return clean_logits, noisy_logits, noise_output

    def build_for(self, batch: int = 1, time_steps: int | None = None) -> TripleGRUDecoder:
        """Create every variable (all three sub-models) by one full-mode pass on zeros."""
        t = time_steps or max(self.patch_size, 1)
        self(tf.zeros((batch, t, self.neural_dim)), tf.zeros((batch,), tf.int32), grl_lambda=1.0, mode="full")
        return self


@register("gru", "tf")
def build_gru_decoder(args, **shared) -> GRUDecoder:
    """The Keras ``GRUDecoder`` from a config: the shared arguments plus ``model.n_layers``."""
    return GRUDecoder(n_layers=int(args["model"]["n_layers"]), **shared)


@register("triple_gru", "tf")
def build_triple_gru_decoder(args, **shared) -> TripleGRUDecoder:
    """The Keras ``TripleGRUDecoder`` from a config: the shared arguments plus ``triple_gru_kwargs``."""
    return TripleGRUDecoder(**triple_gru_kwargs(args), **shared)
