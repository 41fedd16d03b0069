"""The compute device from the original's ``gpu_number`` flag (and an explicit ``device`` override).

One rule for training, evaluation and the LM server (spec: ``--gpu_number``; -1 means CPU in this project):
``device`` wins when given (``cpu``, ``cuda``, ``cuda:N``, ``xla``, ``auto``); otherwise ``gpu_number < 0`` is
the CPU and a non-negative index is that CUDA GPU, falling back to GPU 0 when out of range and to the CPU
without CUDA (each fallback logged once, as a warning).
"""

from __future__ import annotations

import logging

from nejm_b2txt_utils.cli_errors import ConfigError

__all__ = ["select_device"]

log = logging.getLogger(__name__)


def select_device(gpu_number: int | str | None = 0, device: str | None = None, local_rank: int | None = None):
    """Return the ``torch.device`` to run on.

    Args:
        gpu_number: CUDA index; ``-1`` (or any negative) = CPU.
        device: explicit choice: ``None``/``"auto"`` (use ``gpu_number``), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``. ``"xla"`` is not handled here: XLA entry points ask ``torch_xla`` themselves.
        local_rank: under DDP, the process's local rank, which picks the GPU instead of ``gpu_number``.

    Returns:
        ``torch.device``.

    Raises:
        ConfigError (a ValueError): ``device`` is not one of the forms above, or ``gpu_number`` is not an
            integer.
    """
    import torch  # lazy: importing this module must not cost a torch import

    choice = "auto" if device is None else str(device).strip().lower()
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "xla":
        raise ConfigError("device='xla' is chosen by the XLA entry points (torch_xla.device()), not select_device")
    if choice.startswith("cuda:"):
        try:
            gpu_number = int(choice.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"device {device!r}: expected cpu, cuda, cuda:N or auto") from None
    elif choice not in ("auto", "cuda"):
        raise ConfigError(f"device {device!r}: expected cpu, cuda, cuda:N or auto")
    try:
        idx = int(gpu_number if gpu_number is not None else 0)
        if isinstance(gpu_number, float) and not gpu_number.is_integer():
            raise ValueError
    except (TypeError, ValueError):  # a typo must not silently pick a device
        raise ConfigError(f"gpu_number {gpu_number!r}: expected an integer (a CUDA index, or -1 for the CPU)") from None
    if choice == "auto" and idx < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if choice != "auto" or idx >= 0:
            log.warning("CUDA is not available: running on the CPU (pass --gpu_number -1 or device=cpu to "
                        "silence this)")
        return torch.device("cpu")
    if local_rank is not None:
        return torch.device(f"cuda:{local_rank}")
    if not 0 <= idx < torch.cuda.device_count():
        log.warning("GPU %d not available (%d GPUs); using GPU 0", idx, torch.cuda.device_count())
        idx = 0
    return torch.device(f"cuda:{idx}")
