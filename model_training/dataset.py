"""The PyTorch ``Dataset`` of whole padded batches (spec §3): :class:`model_training.trial_batches.TrialBatches`
(the split, the batch index, lazy HDF5 reading; framework-free) with each batch as torch tensors. Use it with
``DataLoader(batch_size=None)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from model_training.trial_batches import (  # noqa: F401 (re-exported: the original's module held them)
    BATCH_KEYS,
    TrainBatchIndex,
    TrialBatches,
    drop_ctc_infeasible,
    session_from_path,
    train_test_split_indicies,
)
from nejm_b2txt_utils.t15_hdf5 import N_FEATURES


class BrainToTextDataset(TrialBatches, Dataset):
    """:class:`TrialBatches` whose items are torch tensors; seeds torch as well as NumPy, as the original."""

    def __init__(self, trial_indicies: dict, n_batches: int, split: str = "train", batch_size: int = 64,
                 days_per_batch: int = 1, random_seed: int = -1, must_include_days: list | None = None,
                 feature_subset: list | None = None, patching: tuple[int, int] | None = (14, 4),
                 n_features: int | None = N_FEATURES):
        """``patching``: the model's ``(patch_size, patch_stride)``, for the files' labels-vs-frames check;
        ``n_features``: the files' feature width (``None``: any)."""
        if random_seed != -1:
            torch.manual_seed(random_seed)
        super().__init__(trial_indicies, n_batches, split, batch_size, days_per_batch, random_seed,
                         must_include_days, feature_subset, patching, n_features)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        """:meth:`TrialBatches.read_batch` as tensors (float32 features, int64 counts)."""
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.read_batch(idx).items()}
