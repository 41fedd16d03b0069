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
