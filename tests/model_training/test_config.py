from pathlib import Path

import pytest
from omegaconf import OmegaConf

from model_training.config import DEFAULT_CONFIG, ConfigError, load_config, normalize_config

REPO = Path(__file__).resolve().parents[2]


def test_original_config_values_and_path_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.dataset.dataset_dir == str(REPO / "data" / "hdf5_data_final")  # relative to the YAML's folder
    assert cfg.output_dir == str(REPO / "model_training" / "trained_models" / "baseline_rnn")
    assert cfg.checkpoint_dir == cfg.output_dir + "/checkpoint"
    assert len(cfg.dataset.sessions) == 45 and sum(cfg.dataset.dataset_probability_val) == 41
    assert [i for i, f in enumerate(cfg.dataset.dataset_probability_val) if f == 0] == [0, 28, 32, 33]
    assert (cfg.lr_max, cfg.epsilon, cfg.weight_decay, cfg.num_training_batches, cfg.seed) == (0.005, 0.1, 0.001,
                                                                                              120000, 10)
    assert cfg.dataset.batch_size == 64 and cfg.dataset.days_per_batch == 4 and cfg.init_checkpoint_path is None
    cli = load_config(DEFAULT_CONFIG, ["output_dir=runs/a", "lr_max=0.01"])
    assert cli.output_dir == str(tmp_path / "runs" / "a") and cli.checkpoint_dir == str(tmp_path / "runs/a/checkpoint")
    assert cli.lr_max == 0.01


def test_sessions_auto_and_flags(tiny_data):
    cfg = load_config(DEFAULT_CONFIG, [f"dataset.dataset_dir={tiny_data / 'hdf5_data_final'}",
                                       "dataset.sessions=auto", "dataset.dataset_probability_val=auto",
                                       "init_checkpoint_path=None"])
    assert list(cfg.dataset.sessions) == ["t15.2023.08.11", "t15.2023.12.03", "t15.2025.04.13"]
    assert list(cfg.dataset.dataset_probability_val) == [0, 1, 1]
    assert cfg.init_checkpoint_path is None  # the original's "None" string


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(DEFAULT_CONFIG, ["lr_max"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = OmegaConf.create({"dataset": {"dataset_dir": str(tmp_path), "sessions": ["a", "b", "a"]}})
    with pytest.raises(ConfigError, match=r"listed twice: \['a'\]"):
        normalize_config(bad)
    bad = OmegaConf.create({"dataset": {"dataset_dir": str(tmp_path), "sessions": ["a", "b"],
                                        "dataset_probability_val": [1]}})
    with pytest.raises(ConfigError, match="expected 2 flags"):
        normalize_config(bad)


def test_a_mistyped_override_key_is_reported_with_the_nearest_key(caplog):
    """A typo such as ``lr_maxx=0.1`` used to be accepted silently (the run kept the default lr_max)."""
    with caplog.at_level("WARNING", logger="model_training.config"):
        cfg = load_config(DEFAULT_CONFIG, ["lr_maxx=0.1", "dataset.batch_sise=3", "lr_max=0.01", "+my_note=7"])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "no key 'lr_maxx' (did you mean 'lr_max'?)" in warnings[0]
    assert "no key 'dataset.batch_sise' (did you mean 'dataset.batch_size'?)" in warnings[1]
    assert cfg.lr_max == 0.01 and cfg.lr_maxx == 0.1 and cfg.my_note == 7 and "+my_note" not in cfg


@pytest.mark.parametrize(("override", "expected"), [
    ("=3", "override '=3': no key before '='"),
    ("lr_max=", "override 'lr_max=': no value after '=' (write lr_max=null to unset it)"),
    ("dataset=5", "override 'dataset=5': dataset is a section of the config; set one of its keys instead"),
])
def test_overrides_that_got_through_are_config_errors(override, expected):
    """Reported by a tryout: '=3' was ignored, 'lr_max=' passed the float check, 'dataset=5' was a traceback."""
    with pytest.raises(ConfigError) as exc:
        load_config(DEFAULT_CONFIG, [override])
    assert str(exc.value).startswith(expected)
