"""CTC in TensorFlow with the baseline's recipe (spec nnn-and-tpu §6.4): float32, blank 0, per trial.

``tf.nn.ctc_loss`` takes unnormalised logits (it applies log-softmax itself, as the PyTorch side does
before ``CTCLoss``) and returns the per-trial negative log-likelihood, not length-normalised; the trainer
averages over the batch. Labels go in sparse on CPU/GPU (the native kernel) and dense on TPU, where
``tf.where`` (dynamic shapes) does not compile.
"""

from __future__ import annotations

import tensorflow as tf


def adjusted_lens(n_time_steps: tf.Tensor, patch_size: int, patch_stride: int) -> tf.Tensor:
    """``[B]`` output frames of ``[B]`` input bins, int32: the tensor twin of
    ``nejm_b2txt_utils.t15_hdf5.n_output_frames`` (``max(0, (n - patch_size) // patch_stride + 1)``; ``n`` when
    ``patch_size <= 0``), as ``model_training.rnn_model.output_frames`` is PyTorch's."""
    n = tf.cast(n_time_steps, tf.int32)
    return n if patch_size <= 0 else tf.maximum((n - patch_size) // patch_stride + 1, 0)


def dense_to_sparse(labels: tf.Tensor, lengths: tf.Tensor) -> tf.SparseTensor:
    """``[B, L]`` padded ids + ``[B]`` lengths -> a SparseTensor of the first ``lengths[b]`` ids of each row."""
    mask = tf.sequence_mask(lengths, tf.shape(labels)[1])  # (B, L)
    indices = tf.where(mask)  # (N, 2)
    return tf.SparseTensor(indices, tf.gather_nd(labels, indices), tf.shape(labels, out_type=tf.int64))


def ctc_per_trial(logits: tf.Tensor, labels: tf.Tensor, label_lens: tf.Tensor, logit_lens: tf.Tensor,
                  dense: bool = False) -> tf.Tensor:
    """CTC negative log-likelihood per trial.

    Args:
        logits: ``[B, P, C]`` (any float dtype; cast to float32 here, so bf16 models work).
        labels: ``[B, L]`` int ids (model order, 1..C-1), padded with anything.
        label_lens: ``[B]`` labels per trial.
        logit_lens: ``[B]`` valid output frames per trial.
        dense: pass labels dense (TPU) instead of sparse.

    Returns:
        ``[B]`` float32 losses.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    label_lens = tf.cast(label_lens, tf.int32)
    logit_lens = tf.cast(logit_lens, tf.int32)
    if dense:
        return tf.nn.ctc_loss(labels=labels, logits=logits, label_length=label_lens, logit_length=logit_lens,
                              logits_time_major=False, blank_index=0)
    return tf.nn.ctc_loss(labels=dense_to_sparse(labels, label_lens), logits=logits, label_length=None,
                          logit_length=logit_lens, logits_time_major=False, blank_index=0)
