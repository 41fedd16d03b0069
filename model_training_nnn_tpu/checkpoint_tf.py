"""TF checkpoints: one pickle per checkpoint, written atomically, with the weights in PyTorch layout.

``checkpoint/best_checkpoint`` and ``checkpoint/last_checkpoint`` hold a dict:

* ``format``: ``'b2txt_tf/1'``; ``model_kind``: ``'gru'`` or ``'triple'``;
* ``model_state_dict``: ``{PyTorch parameter name: float32 array}`` in the PyTorch models' layouts
  (``convert.tf_to_torch``), so ``torch_model.load_state_dict(convert.to_torch(sd))`` takes it as is;
* ``optimizer_state``: ``{group: [arrays of the optimizer's variables]}`` (TF only, for resume);
* ``val_PER``, ``val_loss`` and, in ``last_checkpoint``, ``step`` and the training history.

``init_checkpoint_path`` (and :func:`read_model_state`) also accepts a PyTorch checkpoint (``torch.save`` dict
with ``model_state_dict``), which is how a PyTorch-trained model moves to TF; :func:`export_torch_run`
(``python -m model_training_nnn_tpu.checkpoint_tf TF_RUN TORCH_RUN``) moves a TF run the other way.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from model_training.args_yaml import CheckpointError
from nejm_b2txt_utils.atomic_io import atomic_write_pickle

FORMAT = "b2txt_tf/1"


def save(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (plus the format tag) atomically to ``path``."""
    return atomic_write_pickle(path, {"format": FORMAT, **state})


def load(path: str | os.PathLike) -> dict:
    """Read a TF checkpoint, or a PyTorch one (returned with ``format='torch'`` and NumPy weights).

    Args:
        path: checkpoint file.

    Returns:
        The checkpoint dict; ``model_state_dict`` values are NumPy arrays.

    Raises:
        CheckpointError: missing, unreadable or without ``model_state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with open(path, "rb") as fh:
            ckpt = pickle.load(fh)
    except Exception:  # noqa: BLE001 (not a pickle: maybe a torch zip checkpoint)
        ckpt = None
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        if "model_state_dict" not in ckpt:
            raise CheckpointError(f"{path}: TF checkpoint without 'model_state_dict'")
        return ckpt
    from model_training.checkpoint import load_checkpoint_file  # torch: only to read a PyTorch checkpoint

    ckpt = load_checkpoint_file(path)  # PyTorch (raises CheckpointError with the reason)
    sd = {k: v.detach().cpu().float().numpy() for k, v in ckpt["model_state_dict"].items()}
    return {**{k: v for k, v in ckpt.items() if k != "model_state_dict"}, "model_state_dict": sd, "format": "torch"}


def read_model_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Only the weights of a TF or PyTorch checkpoint, as ``{PyTorch name: array}``."""
    return load(path)["model_state_dict"]


def export_torch_run(tf_run: str | os.PathLike, out_run: str | os.PathLike,
                     checkpoint_name: str = "best_checkpoint") -> Path:
    """Write a TF run's checkpoint as a PyTorch run folder (``checkpoint/args.yaml`` + a ``torch.save``
    checkpoint), which ``model_training/evaluate_model.py`` and the PyTorch trainers load as their own.

    Args:
        tf_run: a TF run folder (``checkpoint/args.yaml``, ``checkpoint/<checkpoint_name>``).
        out_run: the PyTorch run folder to create.
        checkpoint_name: which checkpoint to export.

    Returns:
        The written checkpoint path.

    Raises:
        CheckpointError: a missing or unreadable input.
    """
    import shutil

    import torch

    from model_training.checkpoint import atomic_save, with_compile_prefix

    src = Path(tf_run) / "checkpoint"
    if not (src / "args.yaml").is_file():
        raise CheckpointError(f"{src / 'args.yaml'}: args.yaml not found (expected a TF run folder)")
    ckpt = load(src / checkpoint_name)
    state = {"model_state_dict": with_compile_prefix({k: torch.from_numpy(np.ascontiguousarray(v))
                                                      for k, v in ckpt["model_state_dict"].items()}),
             "val_PER": ckpt.get("val_PER"), "val_loss": ckpt.get("val_loss")}
    dst = Path(out_run) / "checkpoint"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "args.yaml", dst / "args.yaml")
    return atomic_save(state, dst / checkpoint_name)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m model_training_nnn_tpu.checkpoint_tf TF_RUN_DIR TORCH_RUN_DIR\n"
              "Export <TF_RUN_DIR>/checkpoint/best_checkpoint (+ args.yaml) as a PyTorch run folder.")
        sys.exit(0 if len(sys.argv) == 2 else 2)
    try:
        print(export_torch_run(sys.argv[1], sys.argv[2]))
    except CheckpointError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
