"""Causal feature processing for real-time decoding: rolling z-score and one-sided Gaussian smoothing.

Offline evaluation smooths with the centred 9-tap kernel of :func:`augmentation.gauss_kernel` in 'valid'
mode: smoothed bin j needs input bins j..j+8, i.e. 4 bins (80 ms) of the future. Two streaming answers:

- ``centred``: the same kernel, applied when its last bin has arrived (80 ms later). Bit-for-bit the offline
  'valid' result, at 80 ms of extra latency; the first 8 bins of a sentence give no output.
- ``causal``: the kernel's centre tap and the 4 taps before it, renormalised (a half Gaussian over the
  current and 4 past bins); the start of a sentence is zero-padded. No added latency; the offline
  counterpart is :func:`causal_smooth` (``infer_trial(..., smoothing='causal')``).

The rolling z-score normalises each bin with the per-channel mean/std of the bins of the last N finished
sentences (the clinical online system's running normalisation); with no finished sentence yet it passes
bins through (the T15 files are already z-scored per block).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from nejm_b2txt_utils.augmentation import gauss_kernel

SMOOTHING_MODES = ("centred", "causal", "none")
#: Floor of the rolling std (feature units): a channel silent over N sentences is not blown up.
MIN_STD = 1e-3
#: Largest plausible feature magnitude (feature units). The T15 features are z-scored threshold crossings and
#: spike-band power (|x| in the tens at most); beyond this a bin is corrupt (1e30 overflows float32 squares in
#: the z-score and the CTC loss), so the decoder and the recalibrator refuse it like NaN/Inf.
MAX_ABS_FEATURE = 1e6


class BadBinError(ValueError):
    """A bin that cannot be decoded (wrong width, NaN/Inf); the message names what was expected."""


def check_bin(values, n_channels: int, where: str = "bin") -> np.ndarray:
    """One bin as float32 ``[C]``, or an error naming the problem.

    Args:
        values: the bin (any array-like of numbers).
        n_channels: the expected width C.
        where: what the bin is, for the message (e.g. ``"stream entry 1712-0"``).

    Returns:
        ``[C]`` float32 array.

    Raises:
        BadBinError: not C values, NaN/Inf among them, or a value beyond :data:`MAX_ABS_FEATURE`.
    """
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.shape[0] != n_channels:
        raise BadBinError(f"{where}: expected {n_channels} float32 features, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise BadBinError(f"{where}: {int((~np.isfinite(arr)).sum())} NaN/Inf features")
    if np.abs(arr).max(initial=0.0) > MAX_ABS_FEATURE:
        raise BadBinError(f"{where}: feature magnitude {float(np.abs(arr).max()):.3g}, expected at most "
                          f"{MAX_ABS_FEATURE:g}")
    return arr


def causal_kernel(smooth_kernel_std: float = 2.0, smooth_kernel_size: int = 100) -> np.ndarray:
    """The centred kernel's centre tap and the taps before it, renormalised; oldest bin first.

    Args:
        smooth_kernel_std, smooth_kernel_size: as :func:`augmentation.gauss_kernel`.

    Returns:
        ``[taps // 2 + 1]`` float32 weights summing to 1 (5 taps for std 2); the last weighs the newest bin.
    """
    full = gauss_kernel(smooth_kernel_std, smooth_kernel_size)
    half = full[: len(full) // 2 + 1]
    return (half / half.sum()).astype(np.float32)


def causal_smooth(x: torch.Tensor, smooth_kernel_std: float = 2.0, smooth_kernel_size: int = 100) -> torch.Tensor:
    """Offline counterpart of the streaming ``causal`` smoother: ``[B, T, C]`` -> ``[B, T, C]``.

    Output bin t = sum_k w_k x[t - (K-1) + k] with zero bins before the start (K taps of :func:`causal_kernel`).

    Args:
        x: ``[B, T, C]`` features.
        smooth_kernel_std, smooth_kernel_size: as :func:`augmentation.gauss_kernel`.

    Returns:
        ``[B, T, C]``, ``x``'s dtype.
    """
    taps = torch.from_numpy(causal_kernel(smooth_kernel_std, smooth_kernel_size))
    n_channels = x.shape[-1]
    weight = taps.to(device=x.device, dtype=x.dtype).view(1, 1, -1).repeat(n_channels, 1, 1)  # (C, 1, K)
    padded = F.pad(x.permute(0, 2, 1), (len(taps) - 1, 0))  # (B, C, K-1+T)
    return F.conv1d(padded, weight, groups=n_channels).permute(0, 2, 1)  # (B, T, C)


class StreamingSmoother:
    """Smooths one bin at a time (``centred``, ``causal`` or ``none``; see the module docstring).

    Args:
        mode: one of :data:`SMOOTHING_MODES`.
        smooth_kernel_std, smooth_kernel_size: the config's ``dataset.data_transforms`` values.
    """

    def __init__(self, mode: str = "causal", smooth_kernel_std: float = 2.0, smooth_kernel_size: int = 100):
        if mode not in SMOOTHING_MODES:
            raise ValueError(f"smoothing: expected one of {SMOOTHING_MODES}, got {mode!r}")
        self.mode = mode
        if mode == "centred":
            self.kernel = gauss_kernel(smooth_kernel_std, smooth_kernel_size)
        elif mode == "causal":
            self.kernel = causal_kernel(smooth_kernel_std, smooth_kernel_size)
        else:
            self.kernel = np.ones(1, dtype=np.float32)
        self.buffer: deque[np.ndarray] = deque(maxlen=len(self.kernel))
        self.reset()

    @property
    def delay_bins(self) -> int:
        """Bins between an input bin and the output centred on it (4 for ``centred``, else 0)."""
        return len(self.kernel) // 2 if self.mode == "centred" else 0

    def reset(self) -> None:
        """Start a sentence: the buffer empties (``causal`` refills it with zero bins, as the offline padding)."""
        self.buffer.clear()
        self.started = False

    def push(self, bin_: np.ndarray) -> np.ndarray | None:
        """One input bin ``[C]`` -> one smoothed bin ``[C]`` (float32), or ``None`` while ``centred`` fills up."""
        if self.mode == "causal" and not self.started:
            for _ in range(len(self.kernel) - 1):
                self.buffer.append(np.zeros_like(bin_))
        self.started = True
        self.buffer.append(bin_)
        if len(self.buffer) < len(self.kernel):
            return None
        return (self.kernel @ np.stack(self.buffer)).astype(np.float32)  # (K,) @ (K, C) -> (C,)


class RollingZScore:
    """Per-channel z-score with the statistics of the bins of the last ``n_sentences`` finished sentences.

    Args:
        n_sentences: how many finished sentences the statistics span (0: off, bins pass through).
    """

    def __init__(self, n_sentences: int = 0):
        if n_sentences < 0:
            raise ValueError(f"n_sentences: expected >= 0, got {n_sentences}")
        self.n_sentences = n_sentences
        self.history: deque[tuple[np.ndarray, np.ndarray, int]] = deque(maxlen=max(n_sentences, 1))
        self._sum = self._sumsq = None
        self._count = 0
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def push(self, bin_: np.ndarray) -> np.ndarray:
        """Record the raw bin ``[C]`` for this sentence's statistics; returns it normalised (float32)."""
        if self.n_sentences == 0:
            return bin_
        b64 = bin_.astype(np.float64)
        if self._sum is None:
            self._sum, self._sumsq = np.zeros_like(b64), np.zeros_like(b64)
        self._sum += b64
        self._sumsq += b64 * b64
        self._count += 1
        if self.mean is None:
            return bin_
        return ((bin_ - self.mean) / self.std).astype(np.float32)

    def normalise(self, features: np.ndarray) -> np.ndarray:
        """``[T, C]`` with the current statistics (the offline counterpart of :meth:`push`; records nothing)."""
        if self.mean is None:
            return np.asarray(features, dtype=np.float32)
        return ((features - self.mean) / self.std).astype(np.float32)

    def end_sentence(self) -> None:
        """Fold this sentence's bins into the statistics used from the next sentence on."""
        if self.n_sentences == 0 or self._count == 0:
            return
        self.history.append((self._sum, self._sumsq, self._count))
        self._sum = self._sumsq = None
        self._count = 0
        total = sum(h[2] for h in self.history)
        mean = sum(h[0] for h in self.history) / total
        var = sum(h[1] for h in self.history) / total - mean * mean
        self.mean = mean.astype(np.float32)
        self.std = np.sqrt(np.maximum(var, MIN_STD**2)).astype(np.float32)

    def add_sentence(self, features: np.ndarray) -> None:
        """Offline counterpart: record a whole sentence ``[T, C]`` then :meth:`end_sentence`."""
        for row in np.asarray(features, dtype=np.float32):
            self.push(row)
        self.end_sentence()
