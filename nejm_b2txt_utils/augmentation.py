"""Training-time augmentation and Gaussian smoothing of neural features (spec §4), in torch.

All functions take a padded batch ``[B, T, C]`` (time on axis 1, channels last). The order in which
the trainer applies them lives once, in :func:`transform_data`:

    static gain -> white noise -> constant offset -> random walk -> random cut -> Gaussian smoothing

Only the smoothing runs at validation and test time. Training (and the trainer's validation PER)
smooths with ``padding='same'``; the official evaluator with ``padding='valid'`` (T - 8 bins).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from nejm_b2txt_utils.smoothing_kernel import KERNEL_THRESHOLD, gauss_kernel  # noqa: F401 (re-exported)


def gauss_smooth(inputs: torch.Tensor, device: torch.device | str | None = None, smooth_kernel_std: float = 2.0,
                 smooth_kernel_size: int = 100, padding: str = "same") -> torch.Tensor:
    """Smooth ``[B, T, C]`` along time, independently per channel (depthwise conv1d, zero padding).

    The kernel takes the input's dtype: the original built it in float32, which clashed with the
    evaluator's bf16 input on CPU (no autocast there).

    Args:
        inputs: ``[B, T, C]`` features (20 ms bins).
        device: where to run (default: the input's device).
        smooth_kernel_std, smooth_kernel_size: see :func:`gauss_kernel`.
        padding: ``'same'`` keeps T; ``'valid'`` returns T - (taps - 1) bins, bin j centred on input j + 4.

    Returns:
        ``[B, T', C]`` smoothed features, same dtype.

    Raises:
        ValueError: ``padding`` is neither ``'same'`` nor ``'valid'``, or ``inputs`` is not 3-D.
    """
    if padding not in ("same", "valid"):
        raise ValueError(f"padding: expected 'same' or 'valid', got {padding!r}")
    if inputs.ndim != 3:
        raise ValueError(f"inputs: expected [B, T, C], got shape {list(inputs.shape)}")
    device = inputs.device if device is None else device
    taps = torch.from_numpy(gauss_kernel(smooth_kernel_std, smooth_kernel_size))
    n_channels = inputs.shape[-1]
    weight = taps.to(device=device, dtype=inputs.dtype).view(1, 1, -1).repeat(n_channels, 1, 1)
    out = F.conv1d(inputs.permute(0, 2, 1), weight, padding=padding, groups=n_channels)
    return out.permute(0, 2, 1)


def white_noise(features: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add i.i.d. N(0, std^2) to every element, padding included (as the original).

    Args:
        features: ``[B, T, C]`` batch.
        std: noise std (feature units, z-scored).
        generator: torch RNG (default: the global one).

    Returns:
        ``[B, T, C]`` noisy copy.
    """
    return features + torch.randn(features.shape, device=features.device, generator=generator) * std


def constant_offset(features: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add one N(0, std^2) offset per trial and channel, constant over time.

    Args:
        features: ``[B, T, C]`` batch.
        std: offset std.
        generator: torch RNG (default: the global one).

    Returns:
        ``[B, T, C]`` shifted copy.
    """
    b, _, c = features.shape
    return features + torch.randn((b, 1, c), device=features.device, generator=generator) * std


def random_walk(features: torch.Tensor, std: float, axis: int = -1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Add the cumulative sum of N(0, std^2) noise along ``axis``.

    The original's yaml uses ``axis=-1`` (the channel axis, not time); kept as a faithful quirk.

    Args:
        features: ``[B, T, C]`` batch.
        std: std of each step.
        axis: the axis to accumulate along.
        generator: torch RNG (default: the global one).

    Returns:
        ``[B, T, C]`` copy with the walk added.
    """
    steps = torch.randn(features.shape, device=features.device, generator=generator) * std
    return features + torch.cumsum(steps, dim=axis)


def static_gain(features: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply each trial by its own ``I + N(0, std^2)`` channel-mixing matrix.

    Args:
        features: ``[B, T, C]`` batch.
        std: std of the matrix entries around the identity.
        generator: torch RNG (default: the global one).

    Returns:
        ``[B, T, C]`` mixed copy.
    """
    b, _, c = features.shape
    # Fix: the original built the identity on the CPU and the noise on the GPU (device mismatch).
    eye = torch.eye(c, device=features.device, dtype=features.dtype).expand(b, c, c)
    warp = eye + torch.randn((b, c, c), device=features.device, generator=generator).to(features.dtype) * std
    return torch.matmul(features, warp)


def random_cut(features: torch.Tensor, n_time_steps: torch.Tensor, max_cut: int,
               rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop the first ``cut`` bins of the whole batch, ``cut`` uniform in {0, ..., max_cut - 1}.

    One value per batch, drawn from NumPy's global RNG as the original (or from ``rng``).

    Args:
        features: ``[B, T, C]`` batch.
        n_time_steps: ``[B]`` valid lengths (bins).
        max_cut: exclusive upper bound of the cut (>= 1; 1: no cut).
        rng: NumPy generator (default: the global RNG).

    Returns:
        ``(features[:, cut:], n_time_steps - cut, cut)``.
    """
    cut = int(rng.integers(0, max_cut)) if rng is not None else int(np.random.randint(0, max_cut))
    return features[:, cut:, :], n_time_steps - cut, cut


def transform_data(features: torch.Tensor, n_time_steps: torch.Tensor, transform_args: Mapping, mode: str = "train",
                   padding: str = "same") -> tuple[torch.Tensor, torch.Tensor]:
    """Augment (``mode='train'``) then smooth a padded batch, in the original's order (spec §4.1).

    Args:
        features: ``[B, T, C]`` batch (20 ms bins, 512 channels).
        n_time_steps: ``[B]`` valid lengths (bins).
        transform_args: the yaml's ``dataset.data_transforms`` keys (noise stds, ``random_cut``,
            ``smooth_data``, kernel std/size).
        mode: ``'train'`` augments; any other mode only smooths.
        padding: the smoothing's padding (``'same'`` in training, ``'valid'`` in evaluation).

    Returns:
        ``(features [B, T', C], n_time_steps [B])`` after the cut and smoothing.
    """
    if mode == "train":
        if transform_args.get("static_gain_std", 0) > 0:
            features = static_gain(features, transform_args["static_gain_std"])
        if transform_args.get("white_noise_std", 0) > 0:
            features = white_noise(features, transform_args["white_noise_std"])
        if transform_args.get("constant_offset_std", 0) > 0:
            features = constant_offset(features, transform_args["constant_offset_std"])
        if transform_args.get("random_walk_std", 0) > 0:
            features = random_walk(features, transform_args["random_walk_std"],
                                   int(transform_args.get("random_walk_axis", -1)))
        if transform_args.get("random_cut", 0) > 0:
            features, n_time_steps, _ = random_cut(features, n_time_steps, int(transform_args["random_cut"]))
    if transform_args.get("smooth_data", False):
        features = gauss_smooth(features, features.device, transform_args.get("smooth_kernel_std", 2),
                                transform_args.get("smooth_kernel_size", 100), padding=padding)
    return features, n_time_steps
