"""Fixtures for the model_training tests: the synthetic ``tiny`` dataset and seconds-long CPU configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core box OpenMP barriers make
    2 threads ~3x slower than 1. Restored after this package's tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """``nejm_b2txt_utils.synthetic`` preset tiny (3 sessions, the first without val/test data)."""
    from nejm_b2txt_utils.synthetic import generate

    root = tmp_path_factory.mktemp("synth_tiny")
    generate("tiny", root, seed=0, progress=False)
    return root


def tiny_overrides(data_root: Path, output_dir: Path, **extra) -> list[str]:
    """key=value overrides turning rnn_args.yaml into a seconds-long CPU run on the tiny data."""
    kv = {
        "output_dir": str(output_dir), "device": "cpu", "compile": "false",
        "model.n_units": 64, "model.n_layers": 1, "model.rnn_dropout": 0.0,
        "num_training_batches": 20, "lr_max": 0.01, "lr_max_day": 0.01, "lr_min": 0.001, "lr_min_day": 0.001,
        "lr_warmup_steps": 5, "lr_warmup_steps_day": 5, "lr_decay_steps": 20, "lr_decay_steps_day": 20,
        "batches_per_train_log": 10, "batches_per_val_step": 10,
        "dataset.batch_size": 8, "dataset.days_per_batch": 2, "dataset.num_dataloader_workers": 0,
        "dataset.dataset_dir": str(data_root / "hdf5_data_final"), "dataset.sessions": "auto",
        "dataset.dataset_probability_val": "auto",
    }
    kv.update(extra)
    return [f"{k}={v}" for k, v in kv.items()]


def tiny_config(data_root: Path, output_dir: Path, **extra):
    from model_training.config import load_config

    return load_config(REPO / "model_training" / "rnn_args.yaml", tiny_overrides(data_root, output_dir, **extra))


@pytest.fixture
def cfg_factory(tiny_data, tmp_path):
    """``cfg_factory(name, key=value...)``: a tiny config writing to ``tmp_path/name``."""
    def make(name: str = "run", **extra):
        return tiny_config(tiny_data, tmp_path / name, **extra)
    return make


def to_yaml(cfg, path: Path) -> Path:
    path.write_text(OmegaConf.to_yaml(cfg, resolve=False))  # keep checkpoint_dir: ${output_dir}/checkpoint
    return path


@pytest.fixture(scope="session")
def trained_model(tiny_data, tmp_path_factory) -> Path:
    """A model trained for 40 batches on tiny (model_path layout: checkpoint/args.yaml, best_checkpoint)."""
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer

    out = tmp_path_factory.mktemp("trained") / "model"
    trainer = BrainToTextDecoder_Trainer(tiny_config(tiny_data, out, num_training_batches=40,
                                                     lr_decay_steps=40, lr_decay_steps_day=40,
                                                     batches_per_val_step=20))
    trainer.train()
    trainer.close()
    return out
