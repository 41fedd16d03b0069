"""Fixtures for the analyses tests: small synthetic pickles in the original's structure."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyses.pkl_io import write_pickle
from analyses.synthetic_pkl import synthetic_copy_task, synthetic_personal_use

TRIALS_PER_GROUP = 8  # 16 (day, vocab) groups -> 128 trials


@pytest.fixture(scope="session")
def copy_task_pkl(tmp_path_factory) -> Path:
    return write_pickle(synthetic_copy_task(seed=3, trials_per_group=TRIALS_PER_GROUP),
                        tmp_path_factory.mktemp("pkl") / "t15_copyTask.pkl")


@pytest.fixture(scope="session")
def personal_use_pkl(tmp_path_factory) -> Path:
    return write_pickle(synthetic_personal_use(seed=3, mean_trials_per_day=20.0),
                        tmp_path_factory.mktemp("pkl") / "t15_personalUse.pkl")
