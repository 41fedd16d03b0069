"""``args.yaml``, a run's config saved beside its checkpoints: reading it back with the keys a model needs,
writing it atomically, and the error both raise. Framework-free (the PyTorch and TensorFlow runs share it).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nejm_b2txt_utils.atomic_io import atomic_write_text

REQUIRED_MODEL_KEYS = ("n_input_features", "n_units", "n_layers", "rnn_dropout", "patch_size", "patch_stride",
                       "input_network.input_layer_dropout")
REQUIRED_DATASET_KEYS = ("sessions", "n_classes")


class CheckpointError(ValueError):
    """A checkpoint or args.yaml that cannot be used; the message names the file and the problem."""


def atomic_save_yaml(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML (interpolations resolved) to ``path`` atomically; returns ``Path(path)``."""
    return atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def load_model_args(path: str | os.PathLike) -> DictConfig:
    """Read ``args.yaml`` and check the keys needed to rebuild the model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: args.yaml not found (expected <model_path>/checkpoint/args.yaml)")
    try:
        args = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: malformed YAML ({first})") from exc
    if not isinstance(args, DictConfig):
        raise CheckpointError(f"{path}: expected a mapping at the top level, found {type(args).__name__}")
    for section, keys in (("model", REQUIRED_MODEL_KEYS), ("dataset", REQUIRED_DATASET_KEYS)):
        for key in keys:
            if OmegaConf.select(args, f"{section}.{key}", default=None) is None:
                raise CheckpointError(f"{path}: missing key '{section}.{key}' (needed to rebuild the model)")
    sessions = args.dataset.sessions
    if isinstance(sessions, str) or len(sessions) == 0:
        raise CheckpointError(f"{path}: 'dataset.sessions' must be a non-empty list of session names, "
                              f"got {sessions!r}")
    return args
