"""A learnable toy dataset of very short trials (18-20 bins) for the XLA tests and benchmark.

XLA on the CPU compiles the whole step, so its tests must keep T tiny (``nejm_b2txt_utils.synthetic``'s
sentences are hundreds of bins long). Each trial is 2 phoneme ids (1..n_symbols), each held for 9-10 bins
(the shortest trials the HDF5 reader accepts: it checks that 14-bin patches every 4 bins leave 2 frames);
the features are the one-hot code of the current phoneme on channel id - 1 (times a per-session gain) plus
Gaussian noise, in the T15 HDF5 layout (``<root>/<session>/data_{train,val}.hdf5``, 512 channels), so the real
trainer and batcher read it; train on ``dataset.feature_subset`` = the first few channels
(:func:`toy_overrides`).
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


def toy_overrides(data_root: str | Path, output_dir: str | Path, **extra) -> list[str]:
    """key=value overrides turning ``rnn_args_nnn.yaml`` into a tiny TripleGRUDecoder run on the toy data:
    channels 0-7, patches of 2 bins every bin (P = T - 1 <= 19), noise GRU 2 x 16, clean 3 x 16, noisy
    2 x 16 (13,154 parameters), batch 4, 12 batches, one XLA time bucket of 20 bins, fp32.

    Args:
        data_root: the folder :func:`write_toy_dataset` wrote.
        output_dir: the run's output folder.
        **extra: more ``key=value`` pairs (win over the defaults).

    Returns:
        The overrides, for ``model_training.config.load_config``.
    """
    kv = {
        "output_dir": str(output_dir), "compile": "false",
        "model.n_input_features": 8, "dataset.feature_subset": "[0,1,2,3,4,5,6,7]",
        "model.n_units": 16, "model.patch_size": 2, "model.patch_stride": 1, "model.rnn_dropout": 0.0,
        "model.input_network.input_layer_dropout": 0.0,
        "num_training_batches": 12, "lr_max": 0.05, "lr_max_day": 0.05, "lr_min": 0.005, "lr_min_day": 0.005,
        "lr_warmup_steps": 2, "lr_warmup_steps_day": 2, "lr_decay_steps": 12, "lr_decay_steps_day": 12,
        "batches_per_train_log": 4, "batches_per_val_step": 6, "seed": 3,
        "dataset.batch_size": 4, "dataset.days_per_batch": 2, "dataset.num_dataloader_workers": 0,
        "dataset.dataset_dir": str(data_root), "dataset.sessions": "auto",
        "dataset.dataset_probability_val": "auto", "dataset.data_transforms.smooth_kernel_std": 1,
        "xla.time_buckets": "[20]", "xla.precision": "fp32",  # one bucket: toy trials are 18-20 bins
    }
    kv.update(extra)
    return [f"{k}={v}" for k, v in kv.items()]
