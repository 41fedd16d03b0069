"""benchmarks/recipes.py checks its flags before generating data or training (one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("flags", "expected"), [
    (["--batches", "1"], "--batches: expected a number >= 2, got 1"),
    (["--seeds", "0"], "--seeds: expected a number >= 1, got 0"),
    (["--data_dir", "/no/such/root"], "--data_dir /no/such/root: no hdf5_data_final/ there; expected a synthetic root"),
])
def test_bad_flags_are_one_line_before_any_work(flags, expected):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.recipes", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {expected}"
