"""Per-trial inference as the official evaluator runs it (spec §7.2 step 4).

Smoothing uses ``padding='valid'`` (T - 8 bins; the trainer's validation used 'same'). On CUDA the
input is rounded to bf16 and run under bf16 autocast, as the original; on the CPU everything is
float32 (Fix: the original's CPU path fed bf16 input to an fp32 kernel and failed).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from nejm_b2txt_utils.augmentation import gauss_smooth
from nejm_b2txt_utils.t15_hdf5 import n_output_frames


@torch.no_grad()
def infer_trial(model: torch.nn.Module, features: np.ndarray, day_idx: int, device: torch.device | str,
                transform_args: Mapping) -> np.ndarray:
    """``features [T, C]`` -> float32 logits ``[P, 41]`` in model order (empty when T is too short)."""
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
