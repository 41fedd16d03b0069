"""The adversarial settings (spec nnn §3.2, §4.2), once for the PyTorch and TensorFlow trainers: the
``adversarial.*`` defaults and checks, the gradient-reversal schedule and the TripleGRUDecoder's own
constructor arguments. Framework-free: importing it imports neither torch nor TF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from nejm_b2txt_utils.cli_errors import ConfigError

#: adversarial.* keys and their defaults (spec nnn §4.2).
ADVERSARIAL_DEFAULTS = {"enabled": True, "noisy_loss_weight": 0.2, "noise_l2_weight": 0.0, "grl_lambda": 1.0,
                        "grl_schedule": "dann", "grl_gamma": 10.0, "grl_warmup_steps": 0,
                        "grl_skip_when_zero": True, "lr_scale_noise": 1.0, "lr_scale_noisy": 1.0}
#: ``adversarial.grl_schedule`` values (see :func:`grl_lambda_at`).
GRL_SCHEDULES = ("dann", "constant", "linear_warmup")


def adversarial_settings(args: Mapping) -> dict:
    """``args.adversarial`` with the defaults filled in, checked.

    Args:
        args: a training config (the ``adversarial`` section may be absent).

    Returns:
        Every key of :data:`ADVERSARIAL_DEFAULTS`.

    Raises:
        ConfigError: an unknown key (a typo would be silent) or an unknown ``grl_schedule``.
    """
    given = dict(args.get("adversarial") or {})
    unknown = sorted(set(given) - set(ADVERSARIAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"adversarial: unknown key(s) {unknown}; expected {sorted(ADVERSARIAL_DEFAULTS)}")
    adv = {**ADVERSARIAL_DEFAULTS, **given}
    if adv["grl_schedule"] not in GRL_SCHEDULES:
        raise ConfigError(f"adversarial.grl_schedule: expected dann, constant or linear_warmup, "
                          f"got {adv['grl_schedule']!r}")
    return adv


def grl_lambda_at(step: int, n_batches: int, adv: Mapping) -> float:
    """The GRL strength at ``step`` (spec nnn §3.2).

    Args:
        step: the batch index (0-based).
        n_batches: ``num_training_batches`` (p = step / n_batches).
        adv: :func:`adversarial_settings`.

    Returns:
        ``dann``: lambda_max * (2 / (1 + exp(-gamma * p)) - 1) (0 at step 0, 0.46 * lambda_max at p = 0.1);
        ``constant``: lambda_max; ``linear_warmup``: lambda_max * min(1, step / grl_warmup_steps)
        (lambda_max from step 0 when ``grl_warmup_steps`` is 0).

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


def triple_gru_kwargs(args: Mapping) -> dict:
    """The TripleGRUDecoder's own constructor arguments (both frameworks), beyond the shared ones of
    ``model_training.architectures.shared_model_kwargs``.

    Args:
        args: ``model.n_noise_layers`` (2), ``n_clean_layers`` (3), ``n_noisy_layers`` (2), ``noise_units`` and
            ``noisy_units`` (null = the defaults), ``adversarial.grl_skip_when_zero`` (true).

    Returns:
        ``{n_noise_layers, n_clean_layers, n_noisy_layers, noise_units, noisy_units, grl_skip_when_zero}``.
    """
    m, adv = args["model"], args.get("adversarial") or {}
    return dict(n_noise_layers=int(m.get("n_noise_layers", 2)), n_clean_layers=int(m.get("n_clean_layers", 3)),
                n_noisy_layers=int(m.get("n_noisy_layers", 2)), noise_units=m.get("noise_units"),
                noisy_units=m.get("noisy_units"), grl_skip_when_zero=bool(adv.get("grl_skip_when_zero", True)))
