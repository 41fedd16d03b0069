"""train_model.py as users run it: from the repo root and from inside model_training/, with key=value."""

import os
import subprocess
import sys

import pytest

from .conftest import REPO, tiny_overrides


def train_cli(cwd, script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("where", ["repo_root", "model_training"])
def test_runs_from_the_repo_root_and_from_its_folder(where, tiny_data, tmp_path):
    cwd = REPO if where == "repo_root" else REPO / "model_training"
    script = "model_training/train_model.py" if where == "repo_root" else "train_model.py"
    out = tmp_path / "run"
    proc = train_cli(cwd, script, *tiny_overrides(tiny_data, out, num_training_batches=2, batches_per_val_step=1))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"training_log", "train_val_trials.json", "checkpoint"} <= {p.name for p in out.iterdir()}
    assert {"args.yaml", "best_checkpoint", "last_checkpoint", "val_metrics.pkl"} <= \
        {p.name for p in (out / "checkpoint").iterdir()}
    assert "Val batch 1: PER (avg):" in proc.stdout
    # a second run into the same folder explains itself instead of crashing
    again = train_cli(cwd, script, *tiny_overrides(tiny_data, out, num_training_batches=2))
    assert again.returncode == 2 and "resume=true" in again.stderr and "Traceback" not in again.stderr


def test_bad_config_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {n_units: [\n")
    proc = train_cli(REPO, "model_training/train_model.py", "--config", str(bad))
    assert proc.returncode == 2 and "malformed YAML" in proc.stderr and "Traceback" not in proc.stderr
    proc = train_cli(REPO, "model_training/train_model.py", f"output_dir={tmp_path / 'x'}",
                     f"dataset.dataset_dir={tmp_path / 'nowhere'}", "dataset.sessions=auto")
    assert proc.returncode == 2 and "data directory not found" in proc.stderr
