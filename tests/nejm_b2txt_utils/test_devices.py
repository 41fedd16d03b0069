"""select_device: explicit choices, the CPU fallbacks, and typos refused rather than silently mapped."""

from __future__ import annotations

import pytest
import torch

from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.devices import select_device


@pytest.mark.parametrize(("gpu_number", "device", "expected"), [
    (-1, None, "cpu"), ("-1", "auto", "cpu"), (0, "cpu", "cpu"), (3, "cpu", "cpu"),
])
def test_cpu_choices(gpu_number, device, expected):
    assert select_device(gpu_number, device) == torch.device(expected)


@pytest.mark.parametrize("gpu_number", ["abc", "1.5", 1.5, [0], "cuda"])
def test_a_gpu_number_that_is_not_an_integer_is_a_config_error(gpu_number):
    """gpu_number=abc used to fall back to GPU 0 (or, here, the CPU) with only a warning."""
    with pytest.raises(ConfigError, match=r"gpu_number .*: expected an integer \(a CUDA index, or -1 for the CPU\)"):
        select_device(gpu_number)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_an_unknown_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="expected cpu, cuda, cuda:N or auto"):
        select_device(0, device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without CUDA")
def test_no_cuda_falls_back_to_the_cpu_with_a_warning(caplog):
    with caplog.at_level("WARNING"):
        assert select_device(0) == torch.device("cpu")
    assert "CUDA is not available" in caplog.text
