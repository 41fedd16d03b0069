"""Checkpoints: atomic saves, prefix handling, loading with clear errors (``args.yaml``: ``args_yaml.py``).

A checkpoint is the original's ``torch.save`` dict: ``model_state_dict`` (keys always saved with the
``_orig_mod.`` prefix that ``torch.compile`` adds, because the original evaluator can only load
prefixed keys), ``optimizer_state_dict``, ``scheduler_state_dict``, ``val_PER``, ``val_loss``. Ours
may add ``step``, ``rng`` and history keys for a true resume; the original's loader ignores them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from model_training import architectures
from model_training.architectures import check_architecture  # noqa: F401 (re-exported: trainers, evaluators)
from model_training.args_yaml import (  # noqa: F401 (re-exported: checkpoint users read args.yaml through here)
    REQUIRED_DATASET_KEYS,
    REQUIRED_MODEL_KEYS,
    CheckpointError,
    atomic_save_yaml,
    load_model_args,
)
from nejm_b2txt_utils.atomic_io import atomic_open, atomic_write_pickle

COMPILE_PREFIX = "_orig_mod."
DDP_PREFIX = "module."


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes, in any order."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in (DDP_PREFIX, COMPILE_PREFIX):
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def with_compile_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as a compiled model names them (``_orig_mod.gru.weight_ih_l0`` ...), whatever the source."""
    return {COMPILE_PREFIX + k: v for k, v in strip_prefixes(state_dict).items()}


def atomic_save(obj, path: str | os.PathLike, use_torch: bool = True) -> Path:
    """``torch.save`` (or pickle) ``obj`` to ``path`` atomically (``nejm_b2txt_utils.atomic_io``).

    Args:
        obj: what to save.
        path: the final file name (its folder is created).
        use_torch: ``torch.save`` when true, else ``pickle`` (highest protocol).

    Returns:
        ``Path(path)``.
    """
    if not use_torch:
        return atomic_write_pickle(path, obj)
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def load_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load`` a checkpoint and check that it holds a ``model_state_dict`` of tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, Mapping) or "model_state_dict" not in ckpt:
        found = sorted(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path}: expected a dict with 'model_state_dict', found {found}")
    sd = ckpt["model_state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: 'model_state_dict' is not a mapping of tensors")
    return dict(ckpt)


def load_model_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Strict load after stripping prefixes; a mismatch names the missing/unexpected/mis-shaped keys."""
    sd = strip_prefixes(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {list(sd[k].shape)} != {list(v.shape)}" for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)})")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} "
                         f"({len(unexpected)})")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]} (checkpoint vs model built from args.yaml)")
        raise CheckpointError(f"{path}: model_state_dict does not fit the model: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def build_model(args: DictConfig) -> torch.nn.Module:
    """The PyTorch model ``args.model.architecture`` names (``model_training.architectures``: ``gru`` the baseline,
    ``triple_gru`` the adversarial decoder), freshly initialised on the CPU in train mode.

    Raises:
        ConfigError: an unknown architecture.
    """
    return architectures.build_model(args, "torch")


def load_trained_model(model_path: str | os.PathLike, device: str | torch.device = "cpu",
                       checkpoint_name: str = "best_checkpoint") -> tuple[torch.nn.Module, DictConfig]:
    """Rebuild the model from ``<model_path>/checkpoint/args.yaml`` and load ``checkpoint_name``, eval mode."""
    ckpt_dir = Path(model_path) / "checkpoint"
    args = load_model_args(ckpt_dir / "args.yaml")
    try:
        model = build_model(args)
    except (TypeError, ValueError, OmegaConfBaseException) as exc:
        raise CheckpointError(f"{ckpt_dir / 'args.yaml'}: cannot build the model ({exc})") from exc
    ckpt = load_checkpoint_file(ckpt_dir / checkpoint_name)
    load_model_weights(model, ckpt["model_state_dict"], ckpt_dir / checkpoint_name)
    return model.to(device).eval(), args
