"""The framework-free adversarial settings both trainers read (``model_training_nnn/adversarial.py``)."""

from __future__ import annotations

import pytest

from model_training_nnn.adversarial import (
    GRL_SCHEDULES,
    adversarial_settings,
    grl_lambda_at,
    triple_gru_kwargs,
)
from nejm_b2txt_utils.cli_errors import ConfigError


def test_an_unknown_schedule_is_a_config_error_when_the_settings_are_read():
    with pytest.raises(ConfigError, match="adversarial.grl_schedule: expected dann, constant or linear_warmup, "
                                          "got 'cosine'"):
        adversarial_settings({"adversarial": {"grl_schedule": "cosine"}})


@pytest.mark.parametrize("schedule", GRL_SCHEDULES)
def test_warmup_zero_gives_lambda_max_from_step_0_except_dann(schedule):
    adv = adversarial_settings({"adversarial": {"grl_schedule": schedule, "grl_warmup_steps": 0, "grl_lambda": 0.7}})
    assert grl_lambda_at(0, 100, adv) == (0.0 if schedule == "dann" else 0.7)


def test_triple_gru_kwargs_defaults():
    assert triple_gru_kwargs({"model": {}}) == dict(n_noise_layers=2, n_clean_layers=3, n_noisy_layers=2,
                                                    noise_units=None, noisy_units=None, grl_skip_when_zero=True)
