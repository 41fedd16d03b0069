"""Per-trial inference as the official evaluator runs it (spec §7.2 step 4).

Smoothing uses ``padding='valid'`` (T - 8 bins; the trainer's validation used 'same'). On CUDA the
input is rounded to bf16 and run under bf16 autocast, as the original; on the CPU everything is
float32 (Fix: the original's CPU path fed bf16 input to an fp32 kernel and failed).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from nejm_b2txt_utils.augmentation import gauss_kernel, gauss_smooth
from nejm_b2txt_utils.causal_features import SMOOTHING_MODES, causal_smooth
from nejm_b2txt_utils.t15_hdf5 import n_output_frames


def min_trial_bins(model: torch.nn.Module, transform_args: Mapping, smoothing: str = "centred") -> int:
    """The fewest bins (20 ms) a trial needs to give one output frame at evaluation.

    Args:
        model: the decoder (its ``patch_size``; 0 or absent: one frame per bin).
        transform_args: ``dataset.data_transforms`` of ``args.yaml`` (``smooth_data``, kernel std and size).
        smoothing: as :func:`infer_trial`; only ``centred`` ('valid') shortens the trial.

    Returns:
        ``taps - 1 + max(patch_size, 1)`` with centred smoothing ('valid' drops ``taps - 1`` bins), else
        ``max(patch_size, 1)``.
    """
    need = max(int(getattr(model, "patch_size", 0)), 1)
    if transform_args.get("smooth_data", True) and smoothing == "centred":
        taps = gauss_kernel(transform_args.get("smooth_kernel_std", 2), transform_args.get("smooth_kernel_size", 100))
        need += len(taps) - 1
    return need


@torch.no_grad()
def infer_trial(model: torch.nn.Module, features: np.ndarray, day_idx: int, device: torch.device | str,
                transform_args: Mapping, smoothing: str = "centred") -> np.ndarray:
    """``features [T, C]`` -> float32 logits ``[P, 41]`` in model order (empty when T is too short).

    Args:
        model: a ``GRUDecoder`` (or ``TripleGRUDecoder``, inference mode), eval mode.
        features: ``[T, C]`` 20 ms bins; ``T`` may be 0.
        day_idx: the session's day-layer index.
        device: where to run.
        transform_args: the config's ``dataset.data_transforms`` (``smooth_data``, kernel std/size).
        smoothing: ``centred`` (the offline 'valid' smoothing, T - 8 bins), ``causal`` (the real-time decoder's
            one-sided kernel, T bins: ``causal_features.causal_smooth``) or ``none``; ignored when
            ``smooth_data`` is false.

    Returns:
        ``[P, 41]`` float32 logits (80 ms frames), P = ``n_output_frames`` of the smoothed length; ``[0, 41]``
        when ``T`` is below :func:`min_trial_bins` (the caller names the trial; the smoothing conv cannot run on it).

    Raises:
        ValueError: an unknown ``smoothing``.
    """
    if smoothing not in SMOOTHING_MODES:
        raise ValueError(f"smoothing: expected one of {SMOOTHING_MODES}, got {smoothing!r}")
    if np.shape(features)[0] < min_trial_bins(model, transform_args, smoothing):  # was a conv1d RuntimeError
        return np.zeros((0, model.n_classes), dtype=np.float32)
    device = torch.device(device)
    use_bf16 = device.type == "cuda"
    x = torch.as_tensor(np.asarray(features), device=device).unsqueeze(0)
    x = x.to(torch.bfloat16 if use_bf16 else torch.float32)
    day = torch.tensor([day_idx], device=device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        std, size = transform_args.get("smooth_kernel_std", 2), transform_args.get("smooth_kernel_size", 100)
        if transform_args.get("smooth_data", True) and smoothing == "causal":
            x = causal_smooth(x, std, size)
        elif transform_args.get("smooth_data", True) and smoothing == "centred":
            x = gauss_smooth(x, device, std, size, padding="valid")
        patching = int(getattr(model, "patch_size", 0)), int(getattr(model, "patch_stride", 1))
        if n_output_frames(x.shape[1], *patching) == 0:
            return np.zeros((0, model.n_classes), dtype=np.float32)
        logits, _ = model(x, day, states=None, return_state=True)
    return logits.float().cpu().numpy()[0]
