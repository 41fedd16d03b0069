"""The XLA trainer (``model_training_nnn/xla_trainer.py``) on the toy data: static shapes keep the number of
compiled graphs bounded, the loss falls, checkpoints load without torch_xla, bad xla keys give one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

torch_xla = pytest.importorskip("torch_xla")

from model_training_nnn.xla_toy_data import toy_overrides  # noqa: E402
from model_training_nnn.xla_trainer import (  # noqa: E402
    XlaNNNTrainer,
    bucket_length,
    compile_count,
    xla_settings,
)
from nejm_b2txt_utils.cli_errors import ConfigError  # noqa: E402

from .conftest import REPO, toy_config  # noqa: E402


def test_bucket_length():
    assert [bucket_length(t, [16, 20]) for t in (1, 16, 17, 20, 21, 41)] == [16, 16, 20, 20, 40, 60]


def test_xla_settings_errors():
    assert xla_settings({})["precision"] == "bf16_autocast"
    with pytest.raises(ConfigError, match="xla.precision"):
        xla_settings({"xla": {"precision": "fp16"}})
    with pytest.raises(ConfigError, match="unknown key"):
        xla_settings({"xla": {"buckets": [16]}})


@pytest.fixture(scope="module")
def trained(toy_data, tmp_path_factory):
    """12 steps of the TripleGRUDecoder on XLA (fp32, one time bucket), logs every 4 steps, validation at
    batches 0, 6 and 11; the compile count is read after every step. A constant GRL strength: the dann
    schedule's lambda = 0 at step 0 (no GRL node) would add one more set of graphs, compiled once."""
    out = tmp_path_factory.mktemp("xla_run") / "run"
    cfg = toy_config(toy_data, out, **{"adversarial.grl_schedule": "constant"})
    trainer = XlaNNNTrainer(cfg)
    counts = [compile_count()]  # the process's count before the run (other tests compile too)
    step_end = trainer.step_end
    trainer.step_end = lambda i: (step_end(i), counts.append(compile_count()))
    result = trainer.train()
    trainer.close()
    return out, result, counts


def test_compiled_graphs_are_bounded(trained):
    _, result, counts = trained
    before, counts = counts[0], [c - counts[0] for c in counts[1:]]  # graphs this run compiled, after each step
    assert len(counts) == 12
    # New graphs only for step 0 (AdamW state created), the first validation and plain step (counted at
    # step 1) and the first later log step (4, which also computes the noise RMS); then none.
    assert counts[4:] == [counts[4]] * 8, counts
    assert 5 <= counts[-1] <= 12, counts
    assert result["xla_compiles"] == before + counts[-1]


def test_xla_training_lowers_the_loss(trained):
    _, result, _ = trained
    losses = result["train_losses"]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    pers = result["val_PERs"]
    assert len(pers) == 3  # batches 0, 6 and the last
    assert pers[-1] < pers[0], pers


def test_checkpoint_is_host_tensors(trained):
    out, _, _ = trained
    ckpt = torch.load(out / "checkpoint" / "best_checkpoint", weights_only=False)
    devices = {v.device.type for v in ckpt["model_state_dict"].values()}
    assert devices == {"cpu"}
    assert any(k.startswith("_orig_mod.noise_model.") for k in ckpt["model_state_dict"])


def test_cli_bad_xla_key_is_one_line(toy_data, tmp_path):
    args = toy_overrides(toy_data, tmp_path / "bad", **{"xla.precision": "fp16"})
    proc = subprocess.run([sys.executable, str(REPO / "model_training_nnn" / "train_model_xla.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    assert len(lines) == 1 and "xla.precision" in lines[0], proc.stderr[-2000:]


def test_only_xla_entry_points_import_torch_xla():
    """torch_xla patches torch.nn.GRU process-wide: importing the eager packages (and the XLA CLI module,
    which imports torch_xla only when it runs) must leave it unloaded, even where it is installed."""
    code = ("import sys, model_training.rnn_trainer, model_training.evaluate_model, model_training_nnn.rnn_trainer, "
            "model_training_nnn.train_model, model_training_nnn.train_model_xla, model_training_nnn.xla_toy_data; "
            "print(sorted(m for m in sys.modules if m.startswith('torch_xla')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
