"""``tf.data`` input for the TensorFlow trainer, over the baseline's batches (spec nnn-and-tpu §6.5).

The trial split and every batch draw are the baseline's own: :class:`model_training.trial_batches.TrialBatches`
(``days_per_batch`` random days, trials uniformly within them; val walks each day in order) reads the HDF5
files through ``nejm_b2txt_utils.t15_hdf5``. This module only pads those batches to **fixed shapes** (XLA
compiles one program): time to ``max_time_steps`` (``static_max_time_steps`` or the dataset's longest trial,
rounded up to a multiple of 8), labels to ``max_seq_elements`` (500), and the batch to a fixed per-replica
size with a ``valid`` row mask (val batches and replica slices can be short).

Augmentation (:func:`transform_data_tf`) runs on the device inside the step, in the baseline's order
(``nejm_b2txt_utils.augmentation.transform_data``): static gain -> white noise -> constant offset -> random
walk -> random cut -> Gaussian smoothing. Noise draws are stateless (seeded by step and replica), so a
resumed run repeats them; the random cut (one value per batch, as the baseline) is drawn on the host from
a per-batch seed and applied as a shift plus re-padding, keeping T fixed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model_training.trial_batches import TrialBatches
from nejm_b2txt_utils.smoothing_kernel import gauss_kernel
from nejm_b2txt_utils.t15_hdf5 import T15File

STEP_KEYS = ("input_features", "seq_class_ids", "n_time_steps", "phone_seq_lens", "day_indices", "valid")


@dataclass(frozen=True)
class BatchShape:
    """Fixed shapes of one replica's batch: ``batch`` rows, ``time`` bins, ``labels`` ids, ``features`` channels."""

    batch: int
    time: int
    labels: int
    features: int

    def signature(self) -> dict[str, tf.TensorSpec]:
        """The ``output_signature`` of a padded batch (plus the scalar ``cut``)."""
        b = self.batch
        return {"input_features": tf.TensorSpec((b, self.time, self.features), tf.float32),
                "seq_class_ids": tf.TensorSpec((b, self.labels), tf.int32),
                "n_time_steps": tf.TensorSpec((b,), tf.int32), "phone_seq_lens": tf.TensorSpec((b,), tf.int32),
                "day_indices": tf.TensorSpec((b,), tf.int32), "valid": tf.TensorSpec((b,), tf.float32),
                "cut": tf.TensorSpec((), tf.int32)}


def max_time_steps(trial_indices: list[Mapping], multiple: int = 8) -> int:
    """The longest trial (bins) over the given ``train_test_split_indicies`` outputs, rounded up.

    Args:
        trial_indices: split dicts ``{day: {'trials': [...], 'session_path': path}}``.
        multiple: round up to a multiple of this (fewer distinct compiled shapes across datasets).

    Returns:
        The bucket length T (> 0).
    """
    longest = 1
    for split in trial_indices:
        for info in split.values():
            if not info["trials"]:
                continue
            with T15File(info["session_path"], validate=False) as f:
                for t in info["trials"]:
                    longest = max(longest, f.read_meta(int(t))["n_time_steps"])
    return int(math.ceil(longest / multiple) * multiple)


def pad_batch(batch: Mapping, shape: BatchShape, cut: int = 0) -> dict[str, np.ndarray]:
    """A baseline batch dict (torch tensors or arrays, the first n rows) -> fixed-shape NumPy arrays.

    Args:
        batch: ``TrialBatches.read_batch`` dict (keys ``input_features`` [n, t, C], ``seq_class_ids`` [n, l], ...).
        shape: the fixed shapes; n <= shape.batch, t <= shape.time, l <= shape.labels.
        cut: the random-cut bins for this batch (applied on the device).

    Returns:
        ``STEP_KEYS`` + ``cut``; padding rows have ``valid`` 0, day 0, zeros over all ``shape.time`` bins
        and one dummy label (so their CTC is finite; the loss masks them out).

    Raises:
        ValueError: the batch does not fit the fixed shapes (names the field and the sizes).
    """
    def arr(key):
        v = batch[key]
        return v.numpy() if hasattr(v, "numpy") else np.asarray(v)

    x, y = arr("input_features"), arr("seq_class_ids")
    n, t = x.shape[0], x.shape[1]
    if n > shape.batch or t > shape.time or y.shape[1] > shape.labels:
        raise ValueError(f"batch of {n} trials x {t} bins x {y.shape[1]} labels does not fit the fixed shape "
                         f"{shape.batch} x {shape.time} x {shape.labels} (raise static_max_time_steps or "
                         "dataset.max_seq_elements)")
    out = {"input_features": np.zeros((shape.batch, shape.time, shape.features), np.float32),
           "seq_class_ids": np.zeros((shape.batch, shape.labels), np.int32),
           "n_time_steps": np.full(shape.batch, shape.time, np.int32), "phone_seq_lens": np.zeros(shape.batch, np.int32),
           "day_indices": np.zeros(shape.batch, np.int32), "valid": np.zeros(shape.batch, np.float32),
           "cut": np.int32(cut)}
    out["seq_class_ids"][n:, 0] = 1  # padding rows: one dummy label (the sparse CTC kernel rejects none)
    out["phone_seq_lens"][n:] = 1
    out["input_features"][:n, :t] = x
    out["seq_class_ids"][:n, :y.shape[1]] = y
    out["n_time_steps"][:n] = arr("n_time_steps")
    out["phone_seq_lens"][:n] = arr("phone_seq_lens")
    out["day_indices"][:n] = arr("day_indicies")
    out["valid"][:n] = 1.0
    return out


def batch_cut(seed: int, batch_idx: int, max_cut: int) -> int:
    """The random cut of train batch ``batch_idx``: uniform in {0, ..., max_cut - 1} (0 when max_cut <= 0)."""
    if max_cut <= 0:
        return 0
    return int(np.random.default_rng([max(seed, 0), batch_idx]).integers(0, max_cut))


def train_batches(ds: TrialBatches, order: list[int], shape: BatchShape, ranks: list[int], world: int,
                  max_cut: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Padded per-replica batches: for each batch index, slice ``rank`` of ``world`` for each rank in ``ranks``.

    Args:
        ds: the baseline's train dataset (its batch index is the draw).
        order: batch indices to produce, in order (resume = a suffix).
        shape: per-replica fixed shapes.
        ranks: the global replica ranks this input pipeline feeds (one element per rank, in order).
        world: replicas in sync.
        max_cut: the ``random_cut`` augmentation bound.
        seed: seed of the per-batch cut draw.

    Yields:
        :func:`pad_batch` dicts.
    """
    for idx in order:
        cut = batch_cut(seed, idx, max_cut)
        for rank in ranks:
            ds.shard(rank, world)
            yield pad_batch(ds.read_batch(idx), shape, cut)


def make_train_dataset(ds: TrialBatches, order: list[int], shape: BatchShape, ranks: list[int], world: int,
                       max_cut: int, seed: int) -> tf.data.Dataset:
    """:func:`train_batches` as a ``tf.data.Dataset`` with a static ``output_signature``, prefetched."""
    order = list(order)
    gen = tf.data.Dataset.from_generator(
        lambda: train_batches(ds, order, shape, ranks, world, max_cut, seed), output_signature=shape.signature())
    return gen.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------- augmentation
def smooth_tf(x: tf.Tensor, std: float = 2.0, size: int = 100, padding: str = "same") -> tf.Tensor:
    """Gaussian smoothing along time, per channel, with the baseline's kernel (``gauss_kernel``).

    Args:
        x: ``[B, T, C]``.
        std, size: the kernel's ``smooth_kernel_std`` and ``smooth_kernel_size``.
        padding: ``'same'`` (zero padding, keeps T) or ``'valid'`` (T - taps + 1 bins).

    Returns:
        The smoothed features, same dtype as ``x``.
    """
    if padding not in ("same", "valid"):
        raise ValueError(f"padding: expected 'same' or 'valid', got {padding!r}")
    taps = gauss_kernel(std, size)
    c = x.shape[-1]
    kernel = tf.tile(tf.reshape(tf.constant(taps, x.dtype), (-1, 1, 1, 1)), (1, 1, c, 1))  # (K, 1, C, 1)
    y = tf.nn.depthwise_conv2d(x[:, :, None, :], kernel, strides=(1, 1, 1, 1), padding=padding.upper())  # (B, T', 1, C)
    return y[:, :, 0, :]  # (B, T', C)


def apply_cut(x: tf.Tensor, n_time_steps: tf.Tensor, cut: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Drop the first ``cut`` bins of every trial and zero-pad at the end, so T stays fixed.

    Returns ``(features [B, T, C], n_time_steps - cut)``.
    """
    t = tf.shape(x)[1]
    shifted = tf.roll(x, shift=-cut, axis=1)  # (B, T, C): bin j <- bin j + cut
    keep = tf.cast(tf.range(t) < t - cut, x.dtype)[None, :, None]  # (1, T, 1)
    return shifted * keep, n_time_steps - cut


def transform_data_tf(x: tf.Tensor, n_time_steps: tf.Tensor, cut: tf.Tensor, transform_args: Mapping,
                      mode: str, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The baseline's ``transform_data`` in TF ops (augment in ``'train'``, then smooth with ``'same'``).

    Args:
        x: ``[B, T, C]`` float features.
        n_time_steps: ``[B]`` int32.
        cut: scalar int32 random cut for this batch (ignored unless ``mode == 'train'``).
        transform_args: the yaml's ``dataset.data_transforms``.
        mode: ``'train'`` or anything else (smoothing only).
        seed: ``[2]`` int32/int64 stateless seed (distinct per step and replica).

    Returns:
        ``(features [B, T, C], n_time_steps [B])``.
    """
    a = transform_args
    if mode == "train":
        b, c = tf.shape(x)[0], x.shape[-1]
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)  # (4, 2)
        if a.get("static_gain_std", 0) > 0:
            warp = tf.eye(c, batch_shape=[b], dtype=x.dtype) + tf.random.stateless_normal(
                (b, c, c), seeds[0], dtype=x.dtype) * a["static_gain_std"]  # (B, C, C)
            x = tf.linalg.matmul(x, warp)
        if a.get("white_noise_std", 0) > 0:
            x = x + tf.random.stateless_normal(tf.shape(x), seeds[1], dtype=x.dtype) * a["white_noise_std"]
        if a.get("constant_offset_std", 0) > 0:
            x = x + tf.random.stateless_normal((b, 1, c), seeds[2], dtype=x.dtype) * a["constant_offset_std"]
        if a.get("random_walk_std", 0) > 0:
            steps = tf.random.stateless_normal(tf.shape(x), seeds[3], dtype=x.dtype) * a["random_walk_std"]
            x = x + tf.cumsum(steps, axis=int(a.get("random_walk_axis", -1)))
        if a.get("random_cut", 0) > 0:
            x, n_time_steps = apply_cut(x, n_time_steps, cut)
    if a.get("smooth_data", False):
        x = smooth_tf(x, a.get("smooth_kernel_std", 2), a.get("smooth_kernel_size", 100), "same")
    return x, n_time_steps
