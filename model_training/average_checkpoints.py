"""Average the weights of a run's last N checkpoints (icefall's ``--avg``) into a new model folder.

``python model_training/average_checkpoints.py --model_path trained_models/baseline_rnn --avg 5`` reads the
five ``checkpoint/checkpoint_batch_<i>`` files with the highest ``i`` (a run trained with
``save_all_val_steps=true``), averages every floating-point tensor of their ``model_state_dict`` (integer
tensors are taken from the newest), and writes ``<out_dir>/checkpoint/best_checkpoint`` and a copy of
``args.yaml``, both atomically, so ``evaluate_model.py --model_path <out_dir>`` (and ensembles) load it as any
model. ``--checkpoints F1 F2 ...`` averages exactly those files instead. The optimizer state is not carried.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make `model_training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model_training.args_yaml import atomic_save_yaml, load_model_args  # noqa: E402
from model_training.checkpoint import (  # noqa: E402
    CheckpointError,
    atomic_save,
    load_checkpoint_file,
    strip_prefixes,
    with_compile_prefix,
)
from nejm_b2txt_utils.cli_errors import ConfigError, print_bad_input  # noqa: E402

log = logging.getLogger("average_checkpoints")
_BATCH = re.compile(r"^checkpoint_batch_(\d+)$")


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors (summed in float64, cast back); other tensors from the last.

    Args:
        state_dicts: M state dicts with the same keys and shapes (prefixes ``_orig_mod.`` / ``module.`` ignored).

    Returns:
        The averaged state dict, unprefixed keys, each tensor in its original dtype.

    Raises:
        ValueError: no state dicts, their keys or shapes differ (the message names the index and the key), or a
            floating-point tensor holds NaN/inf (named).
    """
    if not state_dicts:
        raise ValueError("average_state_dicts: expected at least one state dict")
    dicts = [strip_prefixes(sd) for sd in state_dicts]
    keys = list(dicts[-1])
    for i, sd in enumerate(dicts):
        if list(sd) != keys:
            diff = sorted(set(sd) ^ set(keys)) or ["(same keys, another order)"]
            raise ValueError(f"state dict {i} has other keys than the last one: {diff[0]!r}")
        for k in keys:
            if sd[k].shape != dicts[-1][k].shape:
                raise ValueError(f"state dict {i}: {k!r} is {tuple(sd[k].shape)}, the last one's "
                                 f"{tuple(dicts[-1][k].shape)}")
            if sd[k].is_floating_point() and not bool(torch.isfinite(sd[k]).all()):  # was averaged silently
                raise ValueError(f"state dict {i}: {k!r} holds NaN or inf")
    out = {}
    for k in keys:
        last = dicts[-1][k]
        if last.is_floating_point():
            out[k] = (sum(sd[k].double() for sd in dicts) / len(dicts)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def last_checkpoints(checkpoint_dir: Path, n: int) -> list[Path]:
    """The ``n`` ``checkpoint_batch_<i>`` files of ``checkpoint_dir`` with the highest ``i``, oldest first.

    Raises:
        ConfigError: fewer than ``n`` such files (the message says how to get them).
    """
    found = sorted((int(m.group(1)), p) for p in checkpoint_dir.glob("checkpoint_batch_*")
                   if (m := _BATCH.match(p.name)))
    if len(found) < n:
        raise ConfigError(f"{checkpoint_dir}: --avg {n} needs {n} checkpoint_batch_<i> files, found {len(found)} "
                          "(train with save_all_val_steps=true)")
    return [p for _, p in found[-n:]]


def average_checkpoints(paths: Sequence[Path], args_yaml: Path, out_dir: Path) -> Path:
    """Average ``paths`` into ``<out_dir>/checkpoint/best_checkpoint`` (+ ``args.yaml``); returns the checkpoint.

    Raises:
        CheckpointError: an unreadable checkpoint, or checkpoints of different models.
    """
    sds = [load_checkpoint_file(p)["model_state_dict"] for p in tqdm(paths, desc="read checkpoints")]
    try:
        averaged = average_state_dicts(sds)
    except ValueError as exc:  # name the files: "state dict i" is paths[i]
        names = ", ".join(f"{i} = {p}" for i, p in enumerate(paths))
        raise CheckpointError(f"cannot average: {exc} (state dicts {names})") from None
    ckpt = {"model_state_dict": with_compile_prefix(averaged), "val_PER": float("nan"), "val_loss": float("nan"),
            "averaged_from": [str(p.resolve()) for p in paths]}
    out = atomic_save(ckpt, out_dir / "checkpoint" / "best_checkpoint")
    atomic_save_yaml(load_model_args(args_yaml), out_dir / "checkpoint" / "args.yaml")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="run folder with checkpoint/args.yaml")
    p.add_argument("--avg", type=int, default=5, help="average the last N checkpoint_batch_<i> (default: %(default)s)")
    p.add_argument("--checkpoints", nargs="+", default=None, help="average these checkpoint files instead")
    p.add_argument("--out_dir", default=None, help="new model folder (default: <model_path>_avg<N>)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ckpt_dir = Path(args.model_path) / "checkpoint"
    try:
        if args.avg < 1:
            raise ConfigError(f"--avg: expected an integer >= 1, got {args.avg}")
        paths = [Path(c) for c in args.checkpoints] if args.checkpoints else last_checkpoints(ckpt_dir, args.avg)
        out_dir = Path(args.out_dir or f"{Path(args.model_path)}_avg{len(paths)}")
        if out_dir.resolve() == Path(args.model_path).resolve() or any(
                out_dir.resolve() in Path(c).resolve().parents for c in paths):  # overwrote the run it read
            raise ConfigError(f"--out_dir {out_dir}: must be a new folder, not --model_path or a folder holding "
                              "the checkpoints being averaged")
        out = average_checkpoints(paths, ckpt_dir / "args.yaml", out_dir)
    except (ConfigError, CheckpointError, FileNotFoundError) as exc:
        return print_bad_input(exc)
    log.info("Averaged %d checkpoints (%s .. %s) into %s", len(paths), paths[0].name, paths[-1].name, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
