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
from nejm_b2txt_utils.t15_hdf5 import n_output_frames


def min_trial_bins(model: torch.nn.Module, transform_args: Mapping) -> int:
    """The fewest bins (20 ms) a trial needs to give one output frame at evaluation.

    Args:
        model: the decoder (its ``patch_size``; 0 or absent: one frame per bin).
        transform_args: ``dataset.data_transforms`` of ``args.yaml`` (``smooth_data``, kernel std and size).

    Returns:
        ``taps - 1 + max(patch_size, 1)`` with smoothing ('valid' drops ``taps - 1`` bins), else ``max(patch_size, 1)``.
    """
    need = max(int(getattr(model, "patch_size", 0)), 1)
    if transform_args.get("smooth_data", True):
        taps = gauss_kernel(transform_args.get("smooth_kernel_std", 2), transform_args.get("smooth_kernel_size", 100))
        need += len(taps) - 1
    return need


@torch.no_grad()
def infer_trial(model: torch.nn.Module, features: np.ndarray, day_idx: int, device: torch.device | str,
                transform_args: Mapping) -> np.ndarray:
    """``features [T, C]`` -> float32 logits ``[P, 41]`` in model order.

    Args:
        model: the decoder.
        features: ``[T, C]`` features of one trial (20 ms bins); ``T`` may be 0.
        day_idx: the session's index in ``args.yaml``'s ``dataset.sessions``.
        device: where to run.
        transform_args: ``dataset.data_transforms`` of ``args.yaml``.

    Returns:
        ``[P, n_classes]`` float32 logits (80 ms frames), ``[0, n_classes]`` when ``T`` is below
        :func:`min_trial_bins` (the caller names the trial; the smoothing conv cannot run on it).
    """
    if np.shape(features)[0] < min_trial_bins(model, transform_args):  # was a conv1d RuntimeError (T < 9 taps)
        return np.zeros((0, model.n_classes), dtype=np.float32)
    device = torch.device(device)
    use_bf16 = device.type == "cuda"
    x = torch.as_tensor(np.asarray(features), device=device).unsqueeze(0)
    x = x.to(torch.bfloat16 if use_bf16 else torch.float32)
    day = torch.tensor([day_idx], device=device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        if transform_args.get("smooth_data", True):
            x = gauss_smooth(x, device, transform_args.get("smooth_kernel_std", 2),
                             transform_args.get("smooth_kernel_size", 100), padding="valid")
        patching = int(getattr(model, "patch_size", 0)), int(getattr(model, "patch_stride", 1))
        if n_output_frames(x.shape[1], *patching) == 0:
            return np.zeros((0, model.n_classes), dtype=np.float32)
        logits, _ = model(x, day, states=None, return_state=True)
    return logits.float().cpu().numpy()[0]
