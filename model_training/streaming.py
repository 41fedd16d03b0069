"""The stateful streaming model: 20 ms bins in, one 80 ms frame of logits out every ``patch_stride`` bins.

Bins pass the rolling z-score and the streaming smoother (``nejm_b2txt_utils.causal_features``), then a
buffer of the last ``patch_size`` smoothed bins. Once it is full, and every ``patch_stride`` bins after,
the window ``[1, patch_size, C]`` goes through the model's own forward (day layer, patchify -> one patch,
GRU from the carried state, read-out), so any model with the ``GRUDecoder`` call signature streams:
the baseline and ``TripleGRUDecoder`` (``mode='inference'``, its state a tuple). The frames equal
``infer_trial(..., smoothing=<same mode>)``'s on the whole trial up to float rounding.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from nejm_b2txt_utils.causal_features import RollingZScore, StreamingSmoother, check_bin


@dataclass
class Frame:
    """One output frame: ``logits [41]`` (model order, float32), its index in the sentence, the model time."""

    logits: np.ndarray
    index: int
    model_ms: float


class StreamingModel:
    """Carries the feature processing, patch buffer and GRU state of one sentence at a time.

    Args:
        model: a ``GRUDecoder``-like module (eval mode) with ``patch_size``, ``patch_stride``, ``n_classes``.
        device: where the model lives (CUDA: bf16 autocast as ``infer_trial``; CPU: float32).
        transform_args: the config's ``dataset.data_transforms`` (``smooth_data``, kernel std/size).
        smoothing: ``causal``, ``centred`` (offline-exact, 80 ms later) or ``none``.
        zscore_sentences: sentences of the rolling z-score (0: off).
        n_channels: the bin width C.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str, transform_args: Mapping,
                 smoothing: str = "causal", zscore_sentences: int = 0, n_channels: int = 512):
        self.device = torch.device(device)
        self.n_channels = n_channels
        if not transform_args.get("smooth_data", True):
            smoothing = "none"
        self.smoother = StreamingSmoother(smoothing, transform_args.get("smooth_kernel_std", 2),
                                          transform_args.get("smooth_kernel_size", 100))
        self.zscore = RollingZScore(zscore_sentences)
        self.set_model(model)
        self.day_idx = 0
        self.reset()

    def set_model(self, model: torch.nn.Module) -> None:
        """Use ``model`` from the next :meth:`reset` on (call between sentences only)."""
        self.model = model.to(self.device).eval()
        self.patch_size = max(int(getattr(model, "patch_size", 0)), 1)
        self.patch_stride = max(int(getattr(model, "patch_stride", 0)), 1)
        self.window: deque[np.ndarray] = deque(maxlen=self.patch_size)

    def reset(self, day_idx: int | None = None) -> None:
        """Start a sentence: empty buffers, the model's initial state (``h0``); optionally a new day."""
        if day_idx is not None:
            self.day_idx = int(day_idx)
        self.smoother.reset()
        self.window.clear()
        self.state = None
        self.n_bins = 0  # smoothed bins in this sentence
        self.n_frames = 0

    def end_sentence(self) -> None:
        """Fold the finished sentence into the rolling z-score."""
        self.zscore.end_sentence()

    @torch.no_grad()
    def push(self, values, where: str = "bin") -> Frame | None:
        """One raw 20 ms bin -> a :class:`Frame` when it completes one, else ``None``.

        Args:
            values: ``[C]`` features.
            where: names the bin in an error.

        Raises:
            BadBinError: wrong width or NaN/Inf (the state is untouched: the caller may skip the bin).
        """
        bin_ = check_bin(values, self.n_channels, where)
        smoothed = self.smoother.push(self.zscore.push(bin_))
        if smoothed is None:
            return None
        self.window.append(smoothed)
        self.n_bins += 1
        if self.n_bins < self.patch_size or (self.n_bins - self.patch_size) % self.patch_stride:
            return None
        t0 = time.perf_counter()
        use_bf16 = self.device.type == "cuda"
        x = torch.from_numpy(np.stack(self.window)).unsqueeze(0)  # (1, patch_size, C)
        x = x.to(self.device, torch.bfloat16 if use_bf16 else torch.float32)
        day = torch.tensor([self.day_idx], device=self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits, self.state = self.model(x, day, states=self.state, return_state=True)  # (1, 1, n_classes)
        out = logits.float().cpu().numpy()[0, -1]
        frame = Frame(out, self.n_frames, (time.perf_counter() - t0) * 1000.0)
        self.n_frames += 1
        return frame
