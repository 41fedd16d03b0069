"""Issue 13 case 7: a config error is one line on stderr and exit 2, never a traceback."""

import os
import subprocess
import sys

import pytest

from model_training.config import DEFAULT_CONFIG, ConfigError, load_config
from nejm_b2txt_utils.cli_errors import exit_2_on_bad_input

from .conftest import REPO, tiny_overrides


def test_days_per_batch_over_the_sessions_with_data_is_one_line_exit_2(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "model_training/train_model.py",
                           *tiny_overrides(tiny_data, out, **{"dataset.days_per_batch": 4})],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "days_per_batch (4) exceeds the 3 days with data" in lines[0]
    assert not out.exists()  # checked before the trainer creates output_dir: fixing the value and rerunning works


@pytest.mark.parametrize("key,value,expected", [
    ("dataset.batch_size", "0", "dataset.batch_size: expected an integer >= 1, got 0"),
    ("model.patch_stride", "1.5", "model.patch_stride: expected an integer >= 1, got 1.5"),
    ("dataset.data_transforms.random_cut", "-1", "random_cut: expected an integer >= 0, got -1"),
    ("num_training_batches", "many", "num_training_batches: expected an integer >= 1, got 'many'"),
    ("lr_scheduler_type", "step", "lr_scheduler_type: expected 'cosine' or 'linear', got 'step'"),
    ("model.n_units", "0", "model.n_units: expected an integer >= 1, got 0"),
    ("model.rnn_dropout", "1.0", "model.rnn_dropout: expected a number in [0.0, 1.0), got 1.0"),
    ("lr_max", "-0.1", "lr_max: expected a number in [0.0, inf), got -0.1"),
    ("epsilon", "small", "epsilon: expected a number in [0.0, inf), got 'small'"),
])
def test_bad_values_are_config_errors(key, value, expected):
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT_CONFIG, [f"{key}={value}"])
    assert expected in str(info.value)


def test_the_decorator_reports_only_the_named_types(capsys):
    @exit_2_on_bad_input(KeyError)
    def main(kind: str) -> int:
        if kind == "config":
            raise ConfigError("a.b: expected 1..3,\n got 7")
        if kind == "key":
            raise KeyError("trial_0004")
        if kind == "bug":
            raise ZeroDivisionError("a bug")
        return 0

    assert main("ok") == 0
    assert main("config") == 2
    assert capsys.readouterr().err == "error: a.b: expected 1..3, got 7\n"
    assert main("key") == 2
    assert capsys.readouterr().err == "error: 'trial_0004'\n"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main("bug")


@pytest.mark.parametrize("script,extra,expected", [
    ("model_training/train_model.py", {"model.architecture": "foo"},
     "model.architecture: expected one of ['gru', 'transformer', 'triple_gru'], got 'foo'"),
    ("model_training_nnn/train_model.py", {"model.architecture": "gru"},
     "model.architecture: the nnn trainer needs 'triple_gru'"),
    ("model_training/train_model.py", {"gpu_number": "abc", "device": "auto"},
     "gpu_number 'abc': expected an integer (a CUDA index, or -1 for the CPU)"),
    ("model_training/train_model.py", {"device": "gpu"}, "device 'gpu': expected cpu, cuda, cuda:N or auto"),
])
def test_a_model_config_error_leaves_no_output_dir(tiny_data, tmp_path, script, extra, expected):
    """Reported: such errors were found after output_dir was made, so the corrected rerun was refused."""
    out = tmp_path / "run"
    args = tiny_overrides(tiny_data, out, **extra)
    if script.startswith("model_training_nnn"):
        args = ["--config", "model_training_nnn/rnn_args_nnn_small.yaml", *args]
    proc = subprocess.run([sys.executable, script, *args], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {expected}")
    assert not out.exists()


def test_a_typo_in_a_yaml_overlay_gets_the_did_you_mean_warning(tmp_path, caplog):
    """Issue 22 case 9: `base:` + `num_training_batchs: 10` was accepted silently (the CLI warned)."""
    import logging

    from model_training.config import DEFAULT_CONFIG, load_config

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(f"base: {DEFAULT_CONFIG}\nnum_training_batchs: 10\nmodel:\n  architecture: gru\n")
    with caplog.at_level(logging.WARNING):
        load_config(overlay)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("'num_training_batchs' (did you mean 'num_training_batches'?)" in m for m in msgs), msgs
    assert not any("architecture" in m for m in msgs)  # a key added on purpose is not a typo
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_config(DEFAULT_CONFIG, ["num_training_batchs=10"])
    assert any("(did you mean 'num_training_batches'?)" in r.getMessage() for r in caplog.records)
