"""The original's Gaussian smoothing kernel (spec §4), framework-free: the PyTorch smoothing
(``augmentation.gauss_smooth``) and the TensorFlow one (``model_training_nnn_tpu.dataset_tf.smooth_tf``) both use it.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import gaussian_filter1d

#: Taps below this value are dropped from the nominal kernel (why ``smooth_kernel_size=100`` gives 9 taps).
KERNEL_THRESHOLD = 0.01


@functools.lru_cache(maxsize=16)
def _kernel_cached(smooth_kernel_std: float, smooth_kernel_size: int) -> np.ndarray:
    impulse = np.zeros(int(smooth_kernel_size), dtype=np.float32)
    impulse[int(smooth_kernel_size) // 2] = 1.0
    kernel = gaussian_filter1d(impulse, float(smooth_kernel_std))
    kernel = kernel[kernel > KERNEL_THRESHOLD]
    kernel = (kernel / kernel.sum()).astype(np.float32)
    kernel.flags.writeable = False
    return kernel


def gauss_kernel(smooth_kernel_std: float = 2.0, smooth_kernel_size: int = 100) -> np.ndarray:
    """The original's smoothing kernel: a filtered impulse, thresholded at 0.01 and renormalised.

    With std 2 and size 100 this is the 9-tap kernel
    ``[0.02763, 0.06628, 0.12383, 0.18017, 0.20416, 0.18017, 0.12383, 0.06628, 0.02763]``.

    Args:
        smooth_kernel_std: Gaussian std in 20 ms bins.
        smooth_kernel_size: length of the impulse before thresholding (bins).

    Returns:
        ``[taps]`` float32 kernel summing to 1.
    """
    return _kernel_cached(float(smooth_kernel_std), int(smooth_kernel_size)).copy()
