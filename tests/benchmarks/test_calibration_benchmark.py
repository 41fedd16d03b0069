"""benchmarks/calibration.py checks its flags before minutes of data generation and training (one line, exit 2)."""

from __future__ import annotations

import pytest

from benchmarks import calibration


@pytest.mark.parametrize(("flags", "expected"), [
    (["--ns", "5,ten"], "--ns: expected a comma list of integers, got '5,ten'"),
    (["--n_early", "1"], "--n_early: expected a number >= 2, got 1"),
    (["--online_steps", "0"], "--online_steps: expected a number >= 1, got 0"),
])
def test_bad_flags_are_one_line_before_any_work(flags, expected, capsys):
    assert calibration.main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_an_interrupted_early_model_is_not_measured(monkeypatch, tmp_path):
    """Ctrl-C during the early model's training: the loop returns early (``interrupted_at``); the benchmark went on
    to calibrate and report the partly trained model."""
    import model_training.rnn_trainer as rnn_trainer
    from benchmarks.calibration import train_early_model

    closed = []

    class Stopped:
        def __init__(self, cfg):
            self.interrupted_at = None

        def train(self):
            self.interrupted_at = 7

        def close(self):
            closed.append(True)

    monkeypatch.setattr(rnn_trainer, "BrainToTextDecoder_Trainer", Stopped)
    with pytest.raises(KeyboardInterrupt, match="early model stopped at batch 7 of 40"):
        train_early_model(tmp_path, ["t15.2023.08.11"], tmp_path / "m", 40)
    assert closed == [True]
