"""A learnable toy dataset of very short trials (18-20 bins) for the XLA tests and benchmark.

XLA on the CPU compiles the whole step, so its tests must keep T tiny (``nejm_b2txt_utils.synthetic``'s
sentences are hundreds of bins long). Each trial is 2 phoneme ids (1..n_symbols), each held for 9-10 bins
(the shortest trials the HDF5 reader accepts: it checks that 14-bin patches every 4 bins leave 2 frames);
the features are the one-hot code of the current phoneme on channel id - 1 (times a per-session gain) plus
Gaussian noise, in the T15 HDF5 layout (``<root>/<session>/data_{train,val}.hdf5``, 512 channels), so the real
trainer and batcher read it; train on ``dataset.feature_subset`` = the first few channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nejm_b2txt_utils.t15_hdf5 import Trial, data_file_path, write_trials

SESSIONS = ("t15.2023.08.11", "t15.2023.08.13")


def toy_trial(rng: np.random.Generator, session: str, index: int, n_features: int, n_symbols: int,
              gain: float) -> Trial:
    """One trial: 2 labels, 9-10 bins each (18-20 bins in all), features ``[T, n_features]`` float32."""
    labels = rng.integers(1, n_symbols + 1, size=2)
    frames = []
    for lab in labels:
        code = np.zeros(n_features, dtype=np.float32)
        code[(int(lab) - 1) % n_features] = gain
        frames += [code] * int(rng.integers(9, 11))
    feats = np.stack(frames) + rng.normal(0.0, 0.3, size=(len(frames), n_features)).astype(np.float32)  # (T, C)
    return Trial(input_features=feats.astype(np.float32), session=session, block_num=1, trial_num=index,
                 seq_class_ids=labels.astype(np.int32), transcription="toy", sentence_label="toy")


def write_toy_dataset(root: str | Path, n_train: int = 32, n_val: int = 8, n_features: int = 512,
                      n_symbols: int = 6, seed: int = 0) -> Path:
    """Write the toy dataset under ``root`` (2 sessions, each with train and val files).

    Args:
        root: output folder (``dataset.dataset_dir``).
        n_train, n_val: trials per session and split.
        n_features: feature channels (512: the T15 format).
        n_symbols: distinct label ids used (1..n_symbols, at most min(40, n_features)): the code channels.
        seed: NumPy seed.

    Returns:
        ``root`` as a Path.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for s, session in enumerate(SESSIONS):
        gain = 2.0 + s  # a per-session scale: what the day layers absorb
        for split, n in (("train", n_train), ("val", n_val)):
            write_trials(data_file_path(root, session, split),
                         [toy_trial(rng, session, i, n_features, n_symbols, gain) for i in range(n)])
    return root
