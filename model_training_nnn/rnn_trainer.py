"""Adversarial training of the TripleGRUDecoder (spec nnn §3): the baseline trainer with four hooks replaced.

Loss per trial: ``CTC(clean) + noisy_loss_weight * CTC(noisy) + noise_l2_weight * mean(noise^2)``; the
noisy head sees the noise estimate through a gradient reversal layer whose strength follows
``adversarial.grl_schedule``. Validation, the best checkpoint and evaluation use the clean head; the
noisy head's greedy PER is logged next to it ("noisy PER"), and every log step prints the noisy CTC,
lambda and the noise RMS relative to the preprocessed input. Everything else (data, augmentation,
schedule, checkpoints, resume, DDP) is ``model_training.rnn_trainer``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from model_training.optim import create_optimizer, parameter_groups
from model_training.rnn_trainer import BrainToTextDecoder_Trainer
from nejm_b2txt_utils.cli_errors import ConfigError

SUB_MODELS = ("noise_model", "clean_speech_model", "noisy_speech_model")
#: adversarial.* keys and their defaults (spec nnn §4.2).
ADVERSARIAL_DEFAULTS = {"enabled": True, "noisy_loss_weight": 0.2, "noise_l2_weight": 0.0, "grl_lambda": 1.0,
                        "grl_schedule": "dann", "grl_gamma": 10.0, "grl_warmup_steps": 0,
                        "grl_skip_when_zero": True, "lr_scale_noise": 1.0, "lr_scale_noisy": 1.0}


def adversarial_settings(args: Mapping) -> dict:
    """``args.adversarial`` with the defaults filled in (unknown keys are an error: a typo would be silent)."""
    given = dict(args.get("adversarial") or {})
    unknown = sorted(set(given) - set(ADVERSARIAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"adversarial: unknown key(s) {unknown}; expected {sorted(ADVERSARIAL_DEFAULTS)}")
    return {**ADVERSARIAL_DEFAULTS, **given}


def grl_lambda_at(step: int, n_batches: int, adv: Mapping) -> float:
    """The GRL strength at ``step`` (spec nnn §3.2).

    Args:
        step: the batch index (0-based).
        n_batches: ``num_training_batches`` (p = step / n_batches).
        adv: :func:`adversarial_settings`.

    Returns:
        ``dann``: lambda_max * (2 / (1 + exp(-gamma * p)) - 1) (0 at step 0, 0.46 * lambda_max at p = 0.1);
        ``constant``: lambda_max; ``linear_warmup``: lambda_max * min(1, step / grl_warmup_steps).

    Raises:
        ConfigError: an unknown schedule.
    """
    lam, kind = float(adv["grl_lambda"]), adv["grl_schedule"]
    if kind == "dann":
        p = step / max(1, n_batches)
        return lam * (2.0 / (1.0 + math.exp(-float(adv["grl_gamma"]) * p)) - 1.0)
    if kind == "constant":
        return lam
    if kind == "linear_warmup":
        warm = int(adv["grl_warmup_steps"])
        return lam if warm <= 0 else lam * min(1.0, step / warm)
    raise ConfigError(f"adversarial.grl_schedule: expected dann, constant or linear_warmup, got {kind!r}")


def nnn_parameter_groups(model: nn.Module, args: Mapping, adv: Mapping) -> list[dict]:
    """The baseline's name-based groups (bias / day_layer / other) per sub-model, each lr scaled by
    ``lr_scale_noise`` (noise model) or ``lr_scale_noisy`` (noisy decoder): up to 9 groups."""
    scales = {"noise_model": adv["lr_scale_noise"], "clean_speech_model": 1.0,
              "noisy_speech_model": adv["lr_scale_noisy"]}
    groups = []
    for name in SUB_MODELS:
        for g in parameter_groups(getattr(model, name), args):
            base_lr = args["lr_max_day"] if g["group_type"] == "day_layer" else args["lr_max"]
            groups.append({**g, "lr": base_lr * float(scales[name]), "sub_model": name})
    return groups


class NNNTrainer(BrainToTextDecoder_Trainer):
    """``BrainToTextDecoder_Trainer`` for ``model.architecture: triple_gru``."""

    def check_config(self) -> None:
        super().check_config()
        self.adv = adversarial_settings(self.args)
        grl_lambda_at(0, 1, self.adv)  # fail on a bad schedule name before any training
        if str(self.args.model.get("architecture", "gru")) != "triple_gru":
            raise ConfigError("model.architecture: the nnn trainer needs 'triple_gru' (use a "
                             "model_training_nnn/rnn_args_nnn*.yaml config)")

    def create_optimizer(self) -> torch.optim.Optimizer:
        return create_optimizer(self.model, self.args, nnn_parameter_groups(self.model, self.args, self.adv))

    def grl_argument(self, step: int) -> torch.Tensor | None:
        """The ``grl_lambda`` passed to the model: None when the seed's skip-when-zero quirk applies,
        else a 0-d tensor (a tensor, not a float, so torch.compile / XLA do not recompile per value)."""
        lam = grl_lambda_at(step, self.n_batches, self.adv)
        if lam == 0.0 and self.adv["grl_skip_when_zero"]:
            return None
        return torch.tensor(lam, dtype=torch.float32, device=self.device)

    def compute_loss(self, features, labels, adjusted_lens, phone_seq_lens, day_indicies, step):
        adv = self.adv
        if not adv["enabled"]:  # the clean path alone (noise model trained through the residual only)
            logits = self.train_net(features, day_indicies, mode="inference")
            per_trial = self.ctc_per_trial(logits, labels, adjusted_lens, phone_seq_lens)
            return per_trial, per_trial, {}
        grl = self.grl_argument(step)
        clean, noisy, noise = self.train_net(features, day_indicies, mode="full", grl_lambda=grl)
        clean_nll = self.ctc_per_trial(clean, labels, adjusted_lens, phone_seq_lens)  # (B,)
        noisy_nll = self.ctc_per_trial(noisy, labels, adjusted_lens, phone_seq_lens)  # (B,)
        objective = clean_nll + float(adv["noisy_loss_weight"]) * noisy_nll
        if float(adv["noise_l2_weight"]) > 0:
            objective = objective + float(adv["noise_l2_weight"]) * noise.float().pow(2).mean(dim=(1, 2))
        log = {"noisy_loss": noisy_nll.detach().mean(),
               "grl_lambda": grl if grl is not None else torch.zeros(())}
        if step % int(self.args.batches_per_train_log) == 0:  # only when it is printed: one extra preprocessing
            log["noise_rms_rel"] = self._noise_rms_ratio(features, day_indicies, noise.detach())
        return objective, clean_nll, log

    @torch.no_grad()
    def _noise_rms_ratio(self, features: torch.Tensor, day_indicies: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """RMS(noise_output) / RMS(x_processed) of this batch (x_processed without dropout)."""
        was_training = self.model.training
        self.model.eval()
        x_processed = self.model._apply_preprocessing(features, day_indicies)  # (B, P, N)
        self.model.train(was_training)
        return noise.float().pow(2).mean().sqrt() / x_processed.float().pow(2).mean().sqrt().clamp_min(1e-12)

    def eval_forward(self, features, day_indicies):
        clean, noisy, _ = self.eval_net(features, day_indicies, mode="full")
        return clean, {"noisy": noisy}
