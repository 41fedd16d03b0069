"""Train/val trial split, the batch index and whole padded batches as NumPy (spec §3), framework-free.

:class:`TrialBatches` keeps the original dataset's constructor, batch index and batch dict keys; trials are
read lazily from HDF5 through :class:`nejm_b2txt_utils.t15_hdf5.T15File`: each process (main or data
worker) opens the files it needs on first use and reads one trial at a time, so memory stays bounded
whatever the dataset size. The PyTorch trainer wraps it as a ``Dataset`` (``model_training/dataset.py``),
the TensorFlow trainer as ``tf.data`` (``model_training_nnn_tpu/dataset_tf.py``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.t15_hdf5 import N_FEATURES, T15File, T15FormatError, ctc_feasible, encode_transcription

log = logging.getLogger(__name__)

BATCH_KEYS = ("input_features", "seq_class_ids", "n_time_steps", "phone_seq_lens", "day_indicies",
              "transcriptions", "block_nums", "trial_nums")


def session_from_path(path: str | os.PathLike) -> str | None:
    """The first path component that starts with ``t15.20`` or ``t12.20`` (the original's rule)."""
    for part in Path(path).parts:
        if part.startswith(("t15.20", "t12.20")):
            return part
    return None


def train_test_split_indicies(file_paths: list[str], test_percentage: float = 0.1, seed: int = -1,
                              bad_trials_dict: dict | None = None) -> tuple[dict, dict]:
    """Split every file's trials into train/test; day key i = position of the file in ``file_paths``.

    Returns ``({day: {'trials': [...], 'session_path': path}}, same for test)``. A missing file keeps
    its day key with no trials, so day indices stay aligned with the session list.
    """
    if seed != -1:
        np.random.seed(seed)
    trials_per_day: dict[int, dict] = {}
    for i, path in enumerate(file_paths):
        session = session_from_path(path)
        good: list[int] = []
        if os.path.exists(path):
            with T15File(path, validate=False) as f:
                for t in range(len(f)):
                    meta = f.read_meta(t)
                    bad = (bad_trials_dict or {}).get(session, {}).get(str(meta["block_num"]), [])
                    if meta["trial_num"] not in bad:
                        good.append(t)
        trials_per_day[i] = {"num_trials": len(good), "trial_indices": good, "session_path": path}

    train: dict[int, dict] = {}
    test: dict[int, dict] = {}
    for day, info in trials_per_day.items():
        n, trials, path = info["num_trials"], info["trial_indices"], info["session_path"]
        if test_percentage == 0:
            train[day] = {"trials": trials, "session_path": path}
            test[day] = {"trials": [], "session_path": path}
        elif test_percentage == 1:
            train[day] = {"trials": [], "session_path": path}
            test[day] = {"trials": trials, "session_path": path}
        else:
            n_test = max(1, int(n * test_percentage))
            test_trials = np.random.choice(trials, size=n_test, replace=False).tolist() if n else []
            chosen = set(test_trials)
            train[day] = {"trials": [t for t in trials if t not in chosen], "session_path": path}
            test[day] = {"trials": test_trials, "session_path": path}
    return train, test


def drop_ctc_infeasible(trial_indicies: dict, patch_size: int, patch_stride: int, max_cut: int = 0,
                        max_warnings: int = 20) -> dict:
    """Leave out the trials CTC cannot align in some augmentation draw, each named in a warning.

    A trial needs one output frame per label plus one per pair of equal adjacent labels (spec: an
    infeasible alignment makes the loss infinite, which aborted the original's run); it has the frames
    left after patching its bins minus the largest random cut. Reads labels and attributes only.

    Args:
        trial_indicies: ``{day: {'trials': [...], 'session_path': path}}`` as ``train_test_split_indicies``.
        patch_size, patch_stride: the model's patching, in bins.
        max_cut: the most bins the random cut can drop (``random_cut - 1``; 0 without it).
        max_warnings: trials named one warning each; the rest are counted in one summary warning.

    Returns:
        A copy of ``trial_indicies`` without the infeasible trials (day keys kept).
    """
    out: dict[int, dict] = {}
    dropped = 0
    for day, info in trial_indicies.items():
        keep: list[int] = []
        path = info["session_path"]
        out[day] = {**info, "trials": keep}
        if not info["trials"]:
            continue
        with T15File(path, validate=False) as f:
            for t in info["trials"]:
                labels = f.read_labels(t)
                meta = f.read_meta(t)
                ok, needed, frames = (True, 0, 0) if labels is None else ctc_feasible(
                    meta["n_time_steps"], labels, patch_size, patch_stride, max_cut)
                if ok:
                    keep.append(t)
                    continue
                dropped += 1
                if dropped <= max_warnings:
                    log.warning("%s: trial_%04d (block %d, trial %d): skipped for training: %d labels + %d "
                                "adjacent repeats need %d CTC frames, but %d bins leave %d after the largest "
                                "random cut (%d bins) and %d/%d patching", path, t, meta["block_num"],
                                meta["trial_num"], len(labels), needed - len(labels), needed,
                                meta["n_time_steps"], frames, max_cut, patch_size, patch_stride)
    if dropped > max_warnings:
        log.warning("%d more trials skipped for training as CTC-infeasible (%d in all)", dropped - max_warnings,
                    dropped)
    return out


class TrainBatchIndex(Mapping):
    """The precomputed train batch index, stored compactly as arrays but read as the original's
    ``{batch_idx: {day: trial_indices}}`` (120k x 64 ints, ~30 MB instead of ~150 MB of dicts)."""

    def __init__(self, days: np.ndarray, trials: np.ndarray):
        self.days = days  # [n_batches, days_per_batch]
        self.trials = trials  # [n_batches, days_per_batch, trials_per_day], -1 = trimmed

    def __getitem__(self, idx: int) -> dict[int, np.ndarray]:
        return {int(d): row[row >= 0] for d, row in zip(self.days[idx], self.trials[idx])}

    def __len__(self) -> int:
        return len(self.days)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.days)))


class TrialBatches:
    """Whole batches of trials as NumPy: ``split='train'`` draws random multi-day batches, ``'test'`` walks each
    day's trials in order (one day per batch). ``shard(rank, world)`` makes each rank load only its
    contiguous slice of every batch. ``read_batch(idx)`` pads one batch; the PyTorch ``Dataset`` is
    ``model_training.dataset.BrainToTextDataset``, the TensorFlow input ``model_training_nnn_tpu.dataset_tf``."""

    def __init__(self, trial_indicies: dict, n_batches: int, split: str = "train", batch_size: int = 64,
                 days_per_batch: int = 1, random_seed: int = -1, must_include_days: list | None = None,
                 feature_subset: list | None = None, patching: tuple[int, int] | None = (14, 4),
                 n_features: int | None = N_FEATURES):
        """``patching``: the model's ``(patch_size, patch_stride)``, for the files' labels-vs-frames check;
        ``n_features``: the files' feature width (``model.n_input_features``; ``None``: any, with a subset)."""
        self.patching = patching
        self.n_features = n_features
        if random_seed != -1:
            np.random.seed(random_seed)
        if split not in ("train", "test"):
            raise ValueError(f'split must be either "train" or "test". Received {split}')
        self.split = split
        self.trial_indicies = trial_indicies
        self.n_days = len(trial_indicies)
        self.batch_size = batch_size
        self.days_per_batch = days_per_batch
        self.feature_subset = feature_subset
        self.n_trials = sum(len(d["trials"]) for d in trial_indicies.values())
        if must_include_days is not None:
            if len(must_include_days) > days_per_batch:
                raise ConfigError(f"must_include_days ({len(must_include_days)}) must be <= days_per_batch "
                                 f"({days_per_batch})")
            if split != "train" and len(must_include_days) > self.n_days:
                raise ConfigError(f"must_include_days ({len(must_include_days)}) exceeds the {self.n_days} days")
            must_include_days = [d if d >= 0 else self.n_days + d for d in must_include_days]
        self.must_include_days = must_include_days
        if split == "train":
            self.n_batches = n_batches
            self.batch_index = self.create_batch_index_train()
        else:
            self.batch_index = self.create_batch_index_test()
            self.n_batches = len(self.batch_index)
        self.rank, self.world_size = 0, 1
        self._files: dict[str, T15File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.n_batches

    def shard(self, rank: int, world_size: int) -> TrialBatches:
        """Load only slice ``rank`` of ``world_size`` contiguous slices of every batch (DDP)."""
        self.rank, self.world_size = rank, world_size
        return self

    def create_batch_index_train(self) -> TrainBatchIndex:
        """Per batch: ``days_per_batch`` distinct days uniformly without replacement, then
        ceil(batch_size / days_per_batch) trials per day uniformly with replacement (spec §3.3)."""
        # Fix: days without train trials are left out of the draw (np.random.choice on an empty day
        # crashed the original). With every day populated the draws are identical to the original's.
        all_days = [d for d, info in self.trial_indicies.items() if len(info["trials"]) > 0]
        if self.days_per_batch > len(all_days):
            raise ConfigError(f"dataset.days_per_batch ({self.days_per_batch}) exceeds the {len(all_days)} days with "
                              "data (sessions with training trials)")
        others = None
        if self.must_include_days:
            others = [d for d in all_days if d not in self.must_include_days]
        per_day = math.ceil(self.batch_size / self.days_per_batch)
        days_arr = np.zeros((self.n_batches, self.days_per_batch), dtype=np.int32)
        trials_arr = np.full((self.n_batches, self.days_per_batch, per_day), -1, dtype=np.int32)
        for b in range(self.n_batches):
            if others is not None:
                days = np.concatenate((self.must_include_days, np.random.choice(
                    others, size=self.days_per_batch - len(self.must_include_days), replace=False)))
            else:
                days = np.random.choice(all_days, size=self.days_per_batch, replace=False)
            counts = {}
            for j, d in enumerate(days):
                trials_arr[b, j] = np.random.choice(self.trial_indicies[d]["trials"], size=per_day, replace=True)
                counts[j] = per_day
            extra = per_day * len(days) - self.batch_size
            while extra > 0:
                j = int(np.flatnonzero(days == np.random.choice(days))[0])
                counts[j] -= 1
                trials_arr[b, j, counts[j]] = -1
                extra -= 1
            days_arr[b] = days
        return TrainBatchIndex(days_arr, trials_arr)

    def create_batch_index_test(self) -> dict[int, dict[int, list[int]]]:
        """Days in key order, each day's trials chunked in stored order into batches of ``batch_size``."""
        index: dict[int, dict[int, list[int]]] = {}
        for d, info in self.trial_indicies.items():
            trials = list(info["trials"])
            for start in range(0, len(trials), self.batch_size):
                index[len(index)] = {d: trials[start:start + self.batch_size]}
        return index

    def _file(self, path: str) -> T15File:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: never share h5py handles
            self._files, self._pid = {}, os.getpid()
        if path not in self._files:
            self._files[path] = T15File(path, n_features=self.n_features, patching=self.patching)
        return self._files[path]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def batch_trials(self, idx: int) -> list[tuple[int, int]]:
        """``(day, trial)`` pairs of batch ``idx`` in order, restricted to this rank's slice."""
        pairs = [(int(d), int(t)) for d, trials in self.batch_index[idx].items() for t in trials]
        if self.world_size > 1:
            n = len(pairs)
            pairs = pairs[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]
        return pairs

    def read_batch(self, idx: int) -> dict[str, np.ndarray]:
        """Batch ``idx`` (this rank's slice), zero-padded: ``input_features`` [B, T, C] (T = the longest trial),
        ``seq_class_ids`` [B, L], ``transcriptions`` [B, 500], and int64 ``n_time_steps``, ``phone_seq_lens``,
        ``day_indicies``, ``block_nums``, ``trial_nums`` [B]. A trial that fails to load is skipped, with a warning.

        Raises:
            RuntimeError: no trial of the batch could be loaded.
        """
        batch: dict[str, list] = {k: [] for k in BATCH_KEYS}
        for day, t in self.batch_trials(idx):
            path = self.trial_indicies[day]["session_path"]
            try:
                trial = self._file(path).read_trial(t)
                if trial.seq_class_ids is None:
                    raise T15FormatError(f"{path}: trial {t}: no labels (a test file cannot be used for training)")
            except (OSError, KeyError, T15FormatError) as exc:
                # As the original, a trial that fails to load is skipped (the batch shrinks), but loudly.
                log.warning("Error loading trial %d from %s: %s", t, path, exc)
                continue
            feats = trial.input_features
            if self.feature_subset:
                feats = feats[:, list(self.feature_subset)]
            batch["input_features"].append(feats)
            batch["seq_class_ids"].append(trial.seq_class_ids)
            batch["transcriptions"].append(encode_transcription(trial.transcription or ""))
            batch["n_time_steps"].append(trial.n_time_steps)
            batch["phone_seq_lens"].append(len(trial.seq_class_ids))
            batch["day_indicies"].append(day)
            batch["block_nums"].append(trial.block_num)
            batch["trial_nums"].append(trial.trial_num)
        if not batch["input_features"]:
            raise RuntimeError(f"batch {idx}: no trial could be loaded (see the warnings above)")
        out = {"input_features": pad_rows(batch["input_features"]), "seq_class_ids": pad_rows(batch["seq_class_ids"]),
               "transcriptions": np.stack(batch["transcriptions"])}
        for key in ("n_time_steps", "phone_seq_lens", "day_indicies", "block_nums", "trial_nums"):
            out[key] = np.asarray(batch[key], dtype=np.int64)
        return out


def pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Arrays ``[n_i, ...]`` -> ``[len(rows), max n_i, ...]``, zero-padded at the end (``pad_sequence``'s layout)."""
    out = np.zeros((len(rows), max(len(r) for r in rows), *rows[0].shape[1:]), dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out
