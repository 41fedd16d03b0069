"""Fixtures for the model_training_nnn tests: one torch thread (as tests/model_training)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread on a shared 2-core box; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
