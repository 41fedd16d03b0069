"""PyTorch/XLA training (spec nnn §5): the eager trainers' hooks, re-pointed at an XLA device.

``XlaTrainerMixin`` goes in front of a trainer class (``NNNTrainer`` for the TripleGRUDecoder, or the
baseline ``BrainToTextDecoder_Trainer``) and overrides hooks only; the train step, validation, checkpoints
and resume are the eager trainer's:

* device: ``torch_xla.device()`` (``select_device``); ``torch_xla.sync()`` once per optimizer step
  (``step_end``), so one step is one graph cut at the same place every time.
* static shapes (``batch_to_device``): time is zero-padded to the smallest of ``xla.time_buckets`` that
  holds the batch (longer batches round up to a multiple of the largest bucket), and validation batches are
  padded to ``dataset.batch_size`` trials (outputs sliced back on the host). The random cut (0 ..
  ``random_cut`` - 1 bins, one draw per batch from NumPy's RNG as the eager trainer) is applied on the host
  before the padding, so the cut never changes a device shape. A run compiles a bounded number of graphs:
  a few per bucket (the step, the log-step variant, validation); ``compile_count()`` reads torch_xla's
  metrics and the count is logged on every log step and at the end of ``train()``.
* CTC (spec §5.6, option 1): ``F.ctc_loss`` has no XLA lowering, so ``ctc_per_trial`` cuts the graph after
  the forward (one ``torch_xla.sync()`` materialises every head at once), moves the logits ([B, P, 41],
  small) to the host and runs log_softmax + CTC there in fp32; gradients flow back through the transfer.
  Labels, label lengths and output lengths never go to the device.
* precision (``xla.precision``, spec §5.3): ``bf16_autocast`` (default: fp32 master weights and AdamW state,
  forward under ``torch.autocast('xla', bfloat16)``), ``bf16_cast`` (the seed's ``model.to(bfloat16)``: half
  the weight memory, but AdamW updates below 2^-8 of a weight are lost) or ``fp32``.
* checkpoints are written from CPU copies, so ``evaluate_model.py`` loads them without torch_xla.

Importing this module imports torch_xla, which replaces ``torch.nn.GRU`` by its scan-based GRU
process-wide: import it only in XLA entry points (``train_model_xla.py``, the XLA tests and benchmark).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torch_xla
import torch_xla.debug.metrics as met
from torch.utils._pytree import tree_map

from model_training.rnn_trainer import BrainToTextDecoder_Trainer
from model_training_nnn.rnn_trainer import NNNTrainer
from nejm_b2txt_utils.augmentation import random_cut
from nejm_b2txt_utils.cli_errors import ConfigError

PRECISIONS = ("fp32", "bf16_autocast", "bf16_cast")
#: xla.* keys and their defaults. Buckets in 20 ms bins: T15 sentences are ~2-30 s (100-1500 bins).
XLA_DEFAULTS = {"precision": "bf16_autocast", "time_buckets": [256, 512, 1024, 2048]}


def xla_settings(args: Mapping) -> dict:
    """``args.xla`` with defaults filled in.

    Args:
        args: the training config.

    Returns:
        ``{"precision": str, "time_buckets": sorted list of positive ints}``.

    Raises:
        ConfigError: an unknown key, an unknown precision or a bucket that is not a positive integer.
    """
    given = dict(args.get("xla") or {})
    unknown = sorted(set(given) - set(XLA_DEFAULTS))
    if unknown:
        raise ConfigError(f"xla: unknown key(s) {unknown}; expected {sorted(XLA_DEFAULTS)}")
    out = {**XLA_DEFAULTS, **given}
    if out["precision"] not in PRECISIONS:
        raise ConfigError(f"xla.precision: expected one of {PRECISIONS}, got {out['precision']!r}")
    buckets = list(out["time_buckets"] or [])
    if not buckets or any(not isinstance(b, int) or b <= 0 for b in buckets):
        raise ConfigError(f"xla.time_buckets: expected a list of positive bin counts, got {buckets!r}")
    out["time_buckets"] = sorted(buckets)
    return out


def bucket_length(n_bins: int, buckets: Sequence[int]) -> int:
    """The padded length of a batch of ``n_bins`` bins: the smallest bucket >= ``n_bins``, else the next
    multiple of the largest bucket.

    Args:
        n_bins: the batch's time length (bins).
        buckets: sorted bucket lengths (bins).

    Returns:
        The static time length (bins) the batch is padded to.
    """
    for b in buckets:
        if n_bins <= b:
            return int(b)
    top = int(buckets[-1])
    return top * math.ceil(n_bins / top)


def compile_count() -> int:
    """How many XLA graphs this process has compiled so far (torch_xla's ``CompileTime`` metric)."""
    data = met.metric_data("CompileTime")
    return int(data[0]) if data else 0


def execute_count() -> int:
    """How many XLA graph executions this process has run so far (``ExecuteTime`` metric)."""
    data = met.metric_data("ExecuteTime")
    return int(data[0]) if data else 0


def _pad_dim(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """Zero-pad ``x`` at the end of ``dim`` to ``length``."""
    missing = length - x.size(dim)
    if missing <= 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, missing]  # F.pad lists the last dimension first
    return F.pad(x, pad)


class XlaTrainerMixin:
    """Hooks that run a ``BrainToTextDecoder_Trainer`` subclass on an XLA device (module docstring)."""

    def __init__(self, args):
        self.xla = xla_settings(args)
        self._eval_batch = 0
        super().__init__(args)
        # The cut happens on the host (batch_to_device); the device-side augmentation never changes T.
        self._host_cut = int(self.transform_args.get("random_cut", 0) or 0)
        self.transform_args = {**self.transform_args, "random_cut": 0}
        self._static_eval_batch = int(self.args.dataset.batch_size)
        self.logger.info(f"XLA device {self.device}, precision {self.xla['precision']}, time buckets "
                         f"{self.xla['time_buckets']} bins, CTC on the host")

    # ------------------------------------------------------------------ hooks
    def select_device(self) -> torch.device:
        return torch_xla.device()

    def build_model(self) -> torch.nn.Module:
        """The wrapped trainer's model, already on the XLA device (and in bf16 for ``bf16_cast``).

        Moving a CPU module to XLA replaces its Parameter objects (CPU and XLA tensors cannot share a
        TensorImpl), so the model must be on the device before the optimizer collects its parameters.
        """
        model = super().build_model()
        if self.xla["precision"] == "bf16_cast":
            model = model.to(torch.bfloat16)
        return model.to(self.device)

    def create_optimizer(self) -> torch.optim.Optimizer:
        """The wrapped trainer's AdamW (same groups, same maths), unfused: torch 2.9 accepts ``fused=True``
        for XLA parameters at construction and rejects it at the first step."""
        optimizer = super().create_optimizer()
        optimizer.defaults["fused"] = False
        for group in optimizer.param_groups:
            group["fused"] = False
        return optimizer

    def _autocast(self):
        return torch.autocast("xla", dtype=torch.bfloat16, enabled=self.xla["precision"] == "bf16_autocast")

    def batch_to_device(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """Features ``[B, T_bucket, C]`` and day indices ``[B]`` on the device (validation: B padded to
        ``dataset.batch_size``); labels ``[B, L]``, n_time_steps ``[B]`` (after the host-side random cut) and
        phone_seq_lens ``[B]`` stay on the host, where the CTC runs."""
        features, n_time_steps, days = batch["input_features"], batch["n_time_steps"], batch["day_indicies"]
        if self.model.training and self._host_cut > 0:
            features, n_time_steps, _ = random_cut(features, n_time_steps, self._host_cut)  # (B, T - cut, C)
        features = _pad_dim(features, 1, bucket_length(features.size(1), self.xla["time_buckets"]))  # (B, T_b, C)
        if not self.model.training:
            self._eval_batch = features.size(0)
            features = _pad_dim(features, 0, self._static_eval_batch)  # (B_static, T_b, C)
            days = _pad_dim(days, 0, self._static_eval_batch)  # padded rows use day 0; sliced off later
        if self.xla["precision"] == "bf16_cast":
            features = features.to(torch.bfloat16)
        return (features.to(self.device), batch["seq_class_ids"], n_time_steps, batch["phone_seq_lens"],
                days.to(self.device))

    def compute_loss(self, features, labels, adjusted_lens, phone_seq_lens, day_indicies, step):
        if self.xla["precision"] == "bf16_cast":  # the augmentation noise is fp32: back to the weights' dtype
            features = features.to(torch.bfloat16)
        return super().compute_loss(features, labels, adjusted_lens, phone_seq_lens, day_indicies, step)

    def ctc_per_trial(self, logits: torch.Tensor, labels: torch.Tensor, adjusted_lens: torch.Tensor,
                      phone_seq_lens: torch.Tensor) -> torch.Tensor:
        """CTC NLL per trial ``[B]`` (on ``logits``' device) computed on the host (spec §5.6 option 1).

        Args:
            logits: ``[B, P, C]`` on the XLA device (or already on the host).
            labels: ``[B, L]``; adjusted_lens: ``[B]`` output frames; phone_seq_lens: ``[B]`` (host or device).

        Returns:
            ``[B]`` fp32, differentiable with respect to ``logits``.
        """
        if logits.device.type == "xla":
            torch_xla.sync()  # materialise the forward once: every head's logits, no recomputation per head
        log_probs = logits.to("cpu").float().log_softmax(2)  # (B, P, C)
        per_trial = self.ctc_loss(log_probs.permute(1, 0, 2), labels.cpu(), adjusted_lens.cpu(),  # (P, B, C)
                                  phone_seq_lens.cpu())
        return per_trial.to(logits.device)

    def eval_forward(self, features: torch.Tensor,
                     day_indicies: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The wrapped trainer's validation forward at the static batch size; returns host tensors of the
        batch's real trials."""
        if self.xla["precision"] == "bf16_cast":
            features = features.to(torch.bfloat16)
        logits, extra = super().eval_forward(features, day_indicies)
        torch_xla.sync()
        n = self._eval_batch
        return logits.to("cpu")[:n], {k: v.to("cpu")[:n] for k, v in extra.items()}

    def step_end(self, step: int) -> None:
        super().step_end(step)
        torch_xla.sync()
        if step % int(self.args.batches_per_train_log) == 0:
            self.logger.info(f"XLA after batch {step}: {compile_count()} graphs compiled, "
                             f"{execute_count()} executed")

    def checkpoint_state(self, state: dict) -> dict:
        """Host copies of every tensor, so a checkpoint loads without torch_xla."""
        state = super().checkpoint_state(state)
        return tree_map(lambda v: v.to("cpu") if isinstance(v, torch.Tensor) else v, state)

    def train(self, stop_at_batch: int | None = None) -> dict:
        """The wrapped trainer's loop; the result also holds ``xla_compiles`` / ``xla_executions``."""
        out = super().train(stop_at_batch)
        out["xla_compiles"], out["xla_executions"] = compile_count(), execute_count()
        fallbacks = sorted(met.executed_fallback_ops())
        self.logger.info(f"XLA: {out['xla_compiles']} graphs compiled, {out['xla_executions']} executed; "
                         f"ops run on the host by fallback: {fallbacks or 'none'}")
        return out


class XlaNNNTrainer(XlaTrainerMixin, NNNTrainer):
    """The adversarial TripleGRUDecoder trainer on XLA (``train_model_xla.py``)."""


class XlaBaselineTrainer(XlaTrainerMixin, BrainToTextDecoder_Trainer):
    """The baseline GRUDecoder trainer on XLA (``model.architecture: gru``)."""
