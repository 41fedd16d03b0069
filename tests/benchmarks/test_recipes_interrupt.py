"""benchmarks/recipes.py: a training run stopped by Ctrl-C is neither reported nor cached, and a rerun resumes it;
``--work``/``--out`` of the wrong kind are refused before any work. The trainer is replaced by a stand-in (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import benchmarks.recipes as recipes
import model_training.rnn_trainer as rnn_trainer


class _FakeTrainer:
    """Stands in for BrainToTextDecoder_Trainer: ``interrupt_at`` set -> stops there as the real loop does on
    Ctrl-C (``interrupted_at``, ``last_checkpoint`` written)."""

    interrupt_at: int | None = None
    configs: list = []

    def __init__(self, cfg):
        import torch

        self.cfg = cfg
        type(self).configs.append(cfg)
        self.model = torch.nn.Linear(2, 3)  # 9 parameters
        self.start_step = 3 if str(cfg.get("resume")).lower() == "true" else 0
        self.best_val_PER = 0.5
        self.interrupted_at = None
        self.checkpoint = Path(cfg.output_dir) / "checkpoint"
        self.checkpoint.mkdir(parents=True, exist_ok=True)

    def train(self):
        if type(self).interrupt_at is not None:
            (self.checkpoint / "last_checkpoint").write_bytes(b"x")
            self.interrupted_at = type(self).interrupt_at

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch, tmp_path):
    _FakeTrainer.interrupt_at, _FakeTrainer.configs = None, []
    monkeypatch.setattr(rnn_trainer, "BrainToTextDecoder_Trainer", _FakeTrainer)
    monkeypatch.setattr(recipes, "split_edits", lambda paths, data_dir: (np.array([1, 2]), np.array([4, 6])))
    session = tmp_path / "data" / "hdf5_data_final" / "t15.2023.08.11"
    session.mkdir(parents=True)
    (session / "data_train.hdf5").write_bytes(b"")  # only listed ("auto" sessions); the stand-ins read nothing
    return tmp_path


def _main(tmp_path: Path, *extra: str) -> int:
    return recipes.main(["--data_dir", str(tmp_path / "data"), "--batches", "6", "--seeds", "1", "--recipes",
                         "baseline", "--threads", "1", "--work", str(tmp_path / "work"), *extra])


def test_interrupted_run_is_not_reported_or_cached_and_a_rerun_resumes_it(fake, capsys):
    _FakeTrainer.interrupt_at = 3
    assert _main(fake) == 130
    captured = capsys.readouterr()
    assert captured.out == ""  # no JSON result
    assert captured.err.strip().splitlines()[-1] == (
        f"interrupted (Ctrl-C): baseline seed 1 stopped at batch 3 of 6; not reported; a rerun resumes it from "
        f"{fake / 'work' / 'data_dir_6b' / 'baseline_seed1'}")
    run = fake / "work" / "data_dir_6b" / "baseline_seed1"
    assert not (run / "recipe_result.json").exists()
    assert (run / "checkpoint" / "last_checkpoint").is_file()  # kept for the resume

    _FakeTrainer.interrupt_at = None
    assert _main(fake) == 0
    assert str(_FakeTrainer.configs[-1].resume).lower() == "true"  # resumed, not started over nor reused
    result = json.loads(capsys.readouterr().out)
    assert result["recipes"]["baseline"]["PER_mean"] == pytest.approx(0.3)  # 3 edits / 10 phonemes
    assert json.loads((run / "recipe_result.json").read_text())["PER"] == pytest.approx(0.3)


def test_result_line_is_progress_output_not_a_warning(fake, capsys):
    assert _main(fake) == 0
    err = capsys.readouterr().err
    assert "baseline: PER 0.3000 (seeds [0.3])" in err
    assert "WARNING" not in err


@pytest.mark.parametrize(("flag", "kind", "expected"), [
    ("--work", "file", "--work {p}: is a file, not a folder; expected a folder (created if missing)"),
    ("--out", "dir", "--out {p}: is a folder; expected a file path"),
    ("--out", "below_file", "--out {p}: {parent} is a file, not a folder; expected a writable folder"),
])
def test_work_and_out_of_the_wrong_kind_are_refused_before_any_work(fake, capsys, flag, kind, expected):
    target = fake / "target"
    if kind == "file":
        target.write_text("")
    elif kind == "dir":
        target.mkdir()
    else:
        (fake / "afile").write_text("")
        target = fake / "afile" / "r.json"
    args = ["--data_dir", str(fake / "data"), "--batches", "6", "--seeds", "1", "--recipes", "baseline",
            "--work", str(fake / "work"), flag, str(target)]
    assert recipes.main(args) == 2
    assert capsys.readouterr().err.strip() == "error: " + expected.format(p=target, parent=fake / "afile")
    assert _FakeTrainer.configs == []  # nothing trained
