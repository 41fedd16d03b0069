"""Train the TripleGRUDecoder with PyTorch/XLA: ``python model_training_nnn/train_model_xla.py [--multi_core]
[--config FILE] [key=value ...]`` in the ``envs/b2txt_xla`` environment (``./setup_xla.sh``).

The CLI of ``model_training_nnn/train_model.py`` (default config ``rnn_args_nnn.yaml``, key=value overrides,
progress bar, ``resume=true``) on an XLA device: set ``PJRT_DEVICE=TPU`` on a TPU VM, ``PJRT_DEVICE=CPU`` to
run the same graphs on the CPU. XLA keys (``xla.precision``: bf16_autocast | bf16_cast | fp32,
``xla.time_buckets``: padded lengths in bins) are described in ``model_training_nnn/xla_trainer.py``.
``--multi_core`` runs one data-parallel replica per device through ``torch_xla.launch`` (TPU: one process
per chip, gradients averaged by DDP over the ``xla`` process group); ``dataset.batch_size`` stays the global
batch, split across the replicas. ``model.architecture: gru`` trains the baseline GRUDecoder instead.
Evaluate the result like any checkpoint: ``model_training/evaluate_model.py --model_path <output_dir>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from any folder: make the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_training.train_model import main as baseline_main  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "rnn_args_nnn.yaml"


def _trainer_cls(cfg):
    """The XLA trainer for ``model.architecture`` (triple_gru, or gru for the baseline)."""
    from model_training_nnn.xla_trainer import XlaBaselineTrainer, XlaNNNTrainer

    arch = str(cfg.model.get("architecture", "gru"))
    return XlaNNNTrainer(cfg) if arch == "triple_gru" else XlaBaselineTrainer(cfg)


def _run(argv: list[str]) -> int:
    return baseline_main(argv, default_config=DEFAULT_CONFIG, trainer_cls=_trainer_cls, description=__doc__)


def _replica(index: int, argv: list[str]) -> None:
    """One ``torch_xla.launch`` replica: join the ``xla`` process group, then the single-device CLI."""
    import torch.distributed as dist
    import torch_xla.distributed.xla_backend  # noqa: F401 (registers the 'xla' backend)
    import torch_xla.runtime as xr

    os.environ.update(RANK=str(xr.global_ordinal()), WORLD_SIZE=str(xr.world_size()),
                      LOCAL_RANK=str(xr.local_ordinal()))
    if xr.world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("xla", init_method="xla://")
    status = _run(argv)
    if status:
        raise SystemExit(status)


def main(argv: list[str] | None = None) -> int:
    """Parse ``--multi_core``, then run the baseline CLI with the XLA trainer; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--multi_core", action="store_true")
    known, rest = pre.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        return _run(rest)  # argparse prints this docstring and exits, before torch_xla loads
    try:
        import torch_xla  # the XLA entry point: only now (it patches torch.nn.GRU process-wide)
    except ImportError:
        print("error: torch_xla is not installed in this Python: run ./setup_xla.sh and use "
              "envs/b2txt_xla/bin/python", file=sys.stderr)
        return 2

    if not known.multi_core:
        return _run(rest)
    torch_xla.launch(_replica, args=(rest,))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
