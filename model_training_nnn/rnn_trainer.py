"""Adversarial training of the TripleGRUDecoder (spec nnn §3): the baseline trainer with four hooks replaced.

Loss per trial: ``CTC(clean) + noisy_loss_weight * CTC(noisy) + noise_l2_weight * mean(noise^2)``; the
noisy head sees the noise estimate through a gradient reversal layer whose strength follows
``adversarial.grl_schedule``. Validation, the best checkpoint and evaluation use the clean head; the
noisy head's greedy PER is logged next to it ("noisy PER"), and every log step prints the noisy CTC,
lambda and the noise RMS relative to the preprocessed input. The settings, their defaults and the lambda
schedule are ``model_training_nnn/adversarial.py`` (shared with the TensorFlow trainer). Everything else
(data, augmentation, schedule, checkpoints, resume, DDP) is ``model_training.rnn_trainer``'s.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from model_training.optim import create_optimizer, parameter_groups
from model_training.rnn_trainer import BrainToTextDecoder_Trainer
from model_training_nnn.adversarial import (  # noqa: F401 (re-exported: the settings lived here)
    ADVERSARIAL_DEFAULTS,
    adversarial_settings,
    grl_lambda_at,
)
from nejm_b2txt_utils.cli_errors import ConfigError

SUB_MODELS = ("noise_model", "clean_speech_model", "noisy_speech_model")


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
        self.adv = adversarial_settings(self.args)  # unknown keys or schedule: before any training
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
