"""The learning-rate factor of the original's schedule (spec §6.3), framework-free: the PyTorch ``LambdaLR``
(``optim.create_lr_scheduler``) and the TensorFlow optimizers (``model_training_nnn_tpu.optim_tf``) both call it.
"""

from __future__ import annotations

import math


def cosine_lr_factor(step: int, min_lr_ratio: float, warmup_steps: int, decay_steps: int) -> float:
    """Linear warmup from 0 (lr = 0 at step 0), cosine decay to ``min_lr_ratio`` at ``decay_steps``."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if step < decay_steps:
        progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
        return max(min_lr_ratio, min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return min_lr_ratio
