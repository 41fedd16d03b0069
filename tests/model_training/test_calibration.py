"""Rapid calibration (model_training/calibration.py, calibrate_model.py) and the evaluator's unknown sessions."""

import shutil

import numpy as np
import pytest
import torch

from model_training import calibrate_model, evaluate_model
from model_training.calibration import (
    CalibrationSettings,
    Calibrator,
    PseudoLabelStats,
    Sentence,
    nearest_day,
    pseudo_label_from_logits,
    pseudo_label_from_sentence,
    read_sentences,
)
from model_training.checkpoint import load_checkpoint_file, load_trained_model, strip_prefixes
from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.t15_hdf5 import list_sessions

NEW = "t15.2025.05.01"  # after the tiny preset's last session (t15.2025.04.13)


@pytest.fixture(scope="module")
def new_day_data(tiny_data, tmp_path_factory):
    """The tiny sessions plus NEW, a copy of the last session's files under a later date."""
    root = tmp_path_factory.mktemp("newday") / "hdf5_data_final"
    src = tiny_data / "hdf5_data_final"
    for s in list_sessions(src):
        shutil.copytree(src / s, root / s)
    shutil.copytree(src / list_sessions(src)[-1], root / NEW)
    return root


def cli_args(trained_model, data, out, *extra):
    return ["--model_path", str(trained_model), "--data_dir", str(data), "--session", NEW, "--n_sentences", "5",
            "--out_path", str(out), "--max_steps", "5", "--stop_loss", "0", *extra]


def test_nearest_day_is_the_nearest_earlier_date():
    sessions = ["t15.2023.08.11", "t15.2023.12.17", "t15.2025.04.13"]
    assert nearest_day(sessions, "t15.2024.01.01") == 1
    assert nearest_day(sessions, "t15.2025.05.01") == 2
    assert nearest_day(sessions, "t15.2023.12.17") == 1
    assert nearest_day(sessions, "t15.2023.01.01") == 0  # none earlier: the nearest later
    with pytest.raises(ConfigError, match="my_new_day"):
        nearest_day(sessions, "my_new_day")


def test_day_layer_mode_adds_one_day_and_leaves_every_other_weight_bit_identical(trained_model, new_day_data,
                                                                                   tmp_path):
    out = tmp_path / "calibrated"
    assert calibrate_model.main(cli_args(trained_model, new_day_data, out)) == 0
    before = strip_prefixes(load_checkpoint_file(trained_model / "checkpoint" / "best_checkpoint")["model_state_dict"])
    after = strip_prefixes(load_checkpoint_file(out / "checkpoint" / "best_checkpoint")["model_state_dict"])
    n_days = sum(k.startswith("day_weights.") for k in before)
    assert set(after) - set(before) == {f"day_weights.{n_days}", f"day_biases.{n_days}"}
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    # initialised from the nearest earlier day (the last one), then trained: changed, but still close to it
    src, new = before[f"day_weights.{n_days - 1}"], after[f"day_weights.{n_days}"]
    assert not torch.equal(new, src)
    assert (new - src).abs().max() < 0.5
    model, args = load_trained_model(out)
    assert list(args.dataset.sessions)[-1] == NEW and len(args.dataset.sessions) == n_days + 1
    assert len(args.dataset.dataset_probability_val) == n_days + 1 and model.n_days == n_days + 1


def test_gru_mode_changes_the_gru_and_only_the_new_day_layer(trained_model, new_day_data, tmp_path):
    model, args = load_trained_model(trained_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    replay = read_sentences(new_day_data, list(args.dataset.sessions)[1], "train", 1, 4)
    cal = Calibrator(model, args, NEW, CalibrationSettings("day_layer+gru", max_steps=3, stop_loss=0), replay)
    res = cal.update(read_sentences(new_day_data, NEW, "train", cal.day, 5))
    assert res.steps == 3 and np.isfinite(res.loss_per_phoneme)
    after = model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(after[k], v)}
    assert changed == {k for k in before if k.startswith("gru.")}  # weights and biases
    assert not torch.equal(after["day_weights.3"], after["day_weights.2"])
    assert torch.equal(after["out.weight"], before["out.weight"]) and torch.equal(after["h0"], before["h0"])


def test_early_stop_ends_an_update_below_the_loss_threshold(trained_model, new_day_data):
    model, args = load_trained_model(trained_model)
    cal = Calibrator(model, args, NEW, CalibrationSettings(max_steps=50, stop_loss=1e9))
    res = cal.update(read_sentences(new_day_data, NEW, "train", cal.day, 3))
    assert res.steps == 1 and res.stopped_early


def test_empty_and_out_of_vocabulary_pseudo_labels_are_skipped_with_a_count():
    stats = PseudoLabelStats()
    assert pseudo_label_from_sentence("", stats) is None
    assert pseudo_label_from_sentence("  ?! ", stats) is None
    assert pseudo_label_from_sentence("the zzxqvword cat", stats) is None
    ids = pseudo_label_from_sentence("the cat", stats)
    assert ids.tolist() == [10, 3, 40, 20, 2, 31, 40]  # DH AH SIL K AE T SIL
    assert (stats.skipped_empty, stats.skipped_oov, stats.used, stats.skipped) == (2, 1, 1, 3)
    blank = np.full((10, 41), -5.0, dtype=np.float32)
    blank[:, 0] = 5.0
    assert pseudo_label_from_logits(blank, 0.5, stats) is None and stats.skipped_empty == 3
    unsure = np.zeros((10, 41), dtype=np.float32)
    unsure[:5, 7] = 0.5  # argmax 7, but p ~ 0.04: below the gate
    assert pseudo_label_from_logits(unsure, 0.5, stats) is None and stats.skipped_low_confidence == 1
    sure = np.full((4, 41), -5.0, dtype=np.float32)
    sure[[0, 1], 7], sure[2, 0], sure[3, 40] = 5.0, 5.0, 5.0
    assert pseudo_label_from_logits(sure, 0.5, stats).tolist() == [7, 40] and stats.used == 2


def test_a_run_killed_mid_update_or_mid_write_leaves_the_previous_checkpoint_in_use(trained_model, new_day_data,
                                                                                      tmp_path, monkeypatch):
    out = tmp_path / "calibrated"
    assert calibrate_model.main(cli_args(trained_model, new_day_data, out)) == 0
    files = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}

    def killed(*_a, **_k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # killed during the optimisation
        m.setattr(Calibrator, "_step", killed)
        assert calibrate_model.main(cli_args(trained_model, new_day_data, out, "--seed", "1")) == 130  # one line
    real_save = torch.save

    def half_written(obj, fh, *a, **k):  # killed while the new checkpoint is being written
        real_save(obj, fh, *a, **k)
        fh.truncate(100)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(torch, "save", half_written)
        assert calibrate_model.main(cli_args(trained_model, new_day_data, out, "--seed", "1")) == 130  # one line
    assert {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()} == files  # no temp file either
    load_trained_model(out)


def test_the_new_model_path_is_published_for_a_running_decoder(trained_model, new_day_data, tmp_path):
    from model_training.calibration import CONTROL_STREAM
    from nejm_b2txt_utils.redis_server import RedisServer

    out = tmp_path / "calibrated"
    with RedisServer() as server:
        assert calibrate_model.main(cli_args(trained_model, new_day_data, out, "--max_steps", "1", "--publish",
                                             f"{server.host}:{server.port}")) == 0
        ((_, fields),) = server.client().xrange(CONTROL_STREAM)
    assert fields == {b"newModelPath": str(out.resolve()).encode()}
    load_trained_model(out)


def test_calibrate_cli_bad_input_is_one_line(trained_model, new_day_data, tmp_path, capsys):
    assert calibrate_model.main(cli_args(trained_model, new_day_data, tmp_path / "o", "--n_sentences", "0")) == 2
    assert calibrate_model.main(["--model_path", str(trained_model), "--data_dir", str(new_day_data), "--session",
                                 "t15.2030.01.01", "--out_path", str(tmp_path / "o")]) == 2
    assert calibrate_model.main(cli_args(trained_model, new_day_data, trained_model)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "n_sentences" in err[0] and "t15.2030.01.01" in err[1] and "--out_path" in err[2]


def test_calibrate_cli_checks_paths_and_settings_before_training(trained_model, new_day_data, tmp_path, capsys,
                                                                 monkeypatch):
    """New-user cases: ``--out_path /etc/passwd/x`` trained, then ended in a NotADirectoryError traceback;
    ``--lr -1`` said ``lr: ...`` (no flag) after the run had started; a file as ``--model_path`` said
    ``args.yaml not found``."""
    from model_training import calibration

    def no_training(*a, **k):
        raise AssertionError("the update ran before the bad input was refused")

    monkeypatch.setattr(calibration.Calibrator, "update", no_training)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [(cli_args(trained_model, new_day_data, afile / "x"),
              f"error: --out_path {afile / 'x'}: {afile} is a file, not a folder; expected a writable folder"),
             (cli_args(trained_model, new_day_data, tmp_path / "o", "--lr", "-1"), "error: --lr: expected > 0, got -1.0"),
             (cli_args(trained_model, new_day_data, tmp_path / "o", "--stop_loss", "nan"),
              "error: --stop_loss: expected >= 0, got nan"),
             (cli_args(afile, new_day_data, tmp_path / "o"), f"error: --model_path {afile}: is a file; expected a folder"),
             (cli_args(trained_model, tmp_path / "nodata", tmp_path / "o"),
              f"error: --data_dir {tmp_path / 'nodata'}: not found; expected a folder")]
    for argv, expected in cases:
        assert calibrate_model.main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def eval_args(model, data, out, *extra):
    return ["--model_path", str(model), "--data_dir", str(data), "--eval_type", "val", "--gpu_number", "-1",
            "--lm", "none", "--csv_path", str(out / "none.csv"), "--out_dir", str(out), "--results_pkl",
            str(out / "r.pkl"), *extra]


def test_evaluator_names_an_unknown_session_in_one_line_and_decodes_it_when_asked(trained_model, new_day_data,
                                                                                  tmp_path, caplog, capsys):
    import pickle

    assert evaluate_model.main(eval_args(trained_model, new_day_data, tmp_path / "skip")) == 0
    lines = [r.getMessage() for r in caplog.records if NEW in r.getMessage()]
    assert len(lines) == 1 and "skipped" in lines[0] and "--unknown_session nearest" in lines[0]
    with open(tmp_path / "skip" / "r.pkl", "rb") as fh:
        skipped = pickle.load(fh)
    assert NEW not in skipped["session"]

    assert evaluate_model.main(eval_args(trained_model, new_day_data, tmp_path / "near", "--unknown_session",
                                         "nearest")) == 0
    with open(tmp_path / "near" / "r.pkl", "rb") as fh:
        near = pickle.load(fh)
    # NEW (decoded last) is a copy of the last known session (decoded just before it), with its day layer
    k = len(near["session"]) - len(skipped["session"])
    new, own = near["greedy_phonemes"][-k:], near["greedy_phonemes"][-2 * k:-k]
    assert k > 0 and new == own and near["greedy_phonemes"][:-k] == skipped["greedy_phonemes"]

    capsys.readouterr()
    assert evaluate_model.main(eval_args(trained_model, new_day_data, tmp_path / "err", "--unknown_session",
                                         "error")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and NEW in err[0] and err[0].startswith("error: ")


def test_triple_gru_decoder_gets_the_day_in_its_noise_and_clean_models(tmp_path):
    from omegaconf import OmegaConf

    from model_training.checkpoint import build_model

    args = OmegaConf.create({
        "model": {"architecture": "triple_gru", "n_input_features": 16, "n_units": 16, "n_layers": 1,
                  "rnn_dropout": 0.0, "patch_size": 4, "patch_stride": 2, "n_noise_layers": 1, "n_clean_layers": 1,
                  "n_noisy_layers": 1, "input_network": {"input_layer_dropout": 0.0}},
        "dataset": {"sessions": ["t15.2023.08.11", "t15.2023.09.01"], "n_classes": 41,
                    "data_transforms": {"smooth_data": True, "white_noise_std": 0.0}},
        "lr_max_day": 0.01, "weight_decay_day": 0.0, "lr_max": 0.01, "weight_decay": 0.0, "beta0": 0.9,
        "beta1": 0.999, "epsilon": 0.1})
    torch.manual_seed(0)
    model = build_model(args)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    sentences = [Sentence(rng.standard_normal((60, 16)).astype(np.float32), np.array([5, 40, 7, 40]), 0)
                 for _ in range(3)]
    cal = Calibrator(model, args, "t15.2023.10.01", CalibrationSettings(max_steps=3, stop_loss=0))
    assert cal.day == 2 and cal.source_day == 1
    assert cal.update(sentences).steps == 3
    cal.save(tmp_path / "m")
    loaded, new_args = load_trained_model(tmp_path / "m")
    after = loaded.state_dict()
    added = set(after) - set(before)
    assert added == {f"{m}.day_{w}.2" for m in ("noise_model", "clean_speech_model") for w in ("weights", "biases")}
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.equal(after["clean_speech_model.day_weights.2"], after["clean_speech_model.day_weights.1"])
    assert list(new_args.dataset.sessions)[-1] == "t15.2023.10.01"
