"""The nnn trainer: configs as overlays, GRL schedule, groups, training on tiny, evaluation of its checkpoint."""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from model_training import evaluate_model
from model_training.checkpoint import build_model, load_checkpoint_file, load_trained_model
from model_training.config import ConfigError, load_config
from model_training_nnn import train_model
from model_training_nnn.adversarial import adversarial_settings, grl_lambda_at
from model_training_nnn.rnn_trainer import nnn_parameter_groups

REPO = Path(__file__).resolve().parents[2]
NNN, NNN_SMALL = REPO / "model_training_nnn" / "rnn_args_nnn.yaml", REPO / "model_training_nnn" / "rnn_args_nnn_small.yaml"
NNN_KEYS = {"architecture", "patch_size", "n_noise_layers", "n_clean_layers", "n_noisy_layers", "noise_units",
            "noisy_units"}


def test_configs_are_overlays_and_the_full_one_has_687m_parameters(tiny_data):
    full, base = load_config(NNN), load_config(REPO / "model_training" / "rnn_args.yaml")
    assert full.model.architecture == "triple_gru" and full.output_dir.endswith("model_training_nnn/trained_models/nnn_rnn")
    assert full.lr_max == base.lr_max and full.dataset.sessions == base.dataset.sessions  # inherited
    assert full.checkpoint_dir == full.output_dir + "/checkpoint"  # the base's interpolation, the overlay's value
    with torch.device("meta"):
        model = build_model(full)
    assert sum(p.numel() for p in model.parameters()) == 687_568_466
    # nnn-small differs from baseline-small only in the nnn keys and output_dir: a like-for-like comparison
    data = [f"dataset.dataset_dir={tiny_data / 'hdf5_data_final'}"]
    small, small_base = load_config(NNN_SMALL, data), load_config(REPO / "model_training" / "rnn_args_small.yaml", data)
    a, b = OmegaConf.to_container(small, resolve=True), OmegaConf.to_container(small_base, resolve=True)
    assert set(a) - set(b) == {"adversarial"}
    # ... and from the full config's adversarial keys only in the two that keep the noise estimate bounded
    full_adv = OmegaConf.to_container(full.adversarial)
    assert {k for k in full_adv if a["adversarial"][k] != full_adv[k]} == {"noise_l2_weight", "lr_scale_noise"}
    assert (full_adv["noise_l2_weight"], full_adv["lr_scale_noise"]) == (0.0, 1.0)
    assert (a["adversarial"]["noise_l2_weight"], a["adversarial"]["lr_scale_noise"]) == (1.0, 0.1)
    assert {k for k in a["model"] if k not in b["model"] or a["model"][k] != b["model"][k]} == NNN_KEYS
    assert {k for k in b if k not in ("model", "output_dir", "checkpoint_dir") and a[k] != b[k]} == set()


def test_base_chain_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nlr_max: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found \(the base of"):
        load_config(tmp_path / "c.yaml")


def test_grl_schedules_and_parameter_groups():
    adv = adversarial_settings({})
    assert grl_lambda_at(0, 1000, adv) == 0.0
    assert grl_lambda_at(100, 1000, adv) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # 0.4621 at p = 0.1
    assert grl_lambda_at(500, 1000, adv) == pytest.approx(0.9866, abs=1e-4)
    assert grl_lambda_at(7, 1000, {**adv, "grl_schedule": "constant", "grl_lambda": 0.3}) == 0.3
    warm = {**adv, "grl_schedule": "linear_warmup", "grl_warmup_steps": 10}
    assert [grl_lambda_at(s, 1000, warm) for s in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match="grl_schedule"):
        grl_lambda_at(0, 10, {**adv, "grl_schedule": "cosine"})
    with pytest.raises(ConfigError, match="unknown key"):
        adversarial_settings({"adversarial": {"grl_lamda": 1.0}})
    cfg = load_config(NNN_SMALL, ["model.n_units=8", "dataset.sessions=[a,b]", "dataset.dataset_probability_val=[1,1]"])
    model = build_model(cfg)
    groups = nnn_parameter_groups(model, cfg, {**adv, "lr_scale_noise": 0.1, "lr_scale_noisy": 2.0})
    assert [(g["sub_model"], g["group_type"]) for g in groups] == [
        ("noise_model", "bias"), ("noise_model", "day_layer"), ("noise_model", "other"),
        ("clean_speech_model", "bias"), ("clean_speech_model", "day_layer"), ("clean_speech_model", "other"),
        ("noisy_speech_model", "bias"), ("noisy_speech_model", "other")]
    lrs = {(g["sub_model"], g["group_type"]): g["lr"] for g in groups}
    assert lrs[("noise_model", "day_layer")] == pytest.approx(0.1 * cfg.lr_max_day)
    assert lrs[("noisy_speech_model", "other")] == pytest.approx(2 * cfg.lr_max)
    assert lrs[("clean_speech_model", "bias")] == cfg.lr_max
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter exactly once


def nnn_overrides(data_root: Path, out: Path, **extra) -> list[str]:
    """nnn-small shrunk to seconds on tiny: 64 of the 512 features (noise GRU 64), 32 units, batches of 8."""
    kv = {"output_dir": str(out), "device": "cpu", "compile": "false", "model.n_units": 32,
          "model.n_input_features": 64, "dataset.feature_subset": f"[{','.join(map(str, range(64)))}]",
          "num_training_batches": 30, "lr_warmup_steps": 3, "lr_warmup_steps_day": 3, "batches_per_train_log": 10,
          "batches_per_val_step": 15, "dataset.batch_size": 8, "dataset.days_per_batch": 2,
          "dataset.num_dataloader_workers": 0, "dataset.dataset_dir": str(data_root / "hdf5_data_final"),
          "dataset.sessions": "auto", "dataset.dataset_probability_val": "auto"}
    kv.update(extra)
    return [f"{k}={v}" for k, v in kv.items()]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from nejm_b2txt_utils.synthetic import generate

    root = tmp_path_factory.mktemp("nnn_tiny")
    generate("tiny", root, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def trained_nnn(tiny_data, tmp_path_factory) -> Path:
    """30 batches of nnn on tiny through the CLI's main (in-process)."""
    out = tmp_path_factory.mktemp("nnn") / "model"
    assert train_model.main(["--config", str(NNN_SMALL), *nnn_overrides(tiny_data, out)]) == 0
    return out


def test_training_on_tiny_lowers_the_clean_loss_and_logs_the_adversary(trained_nnn):
    ckpt = load_checkpoint_file(trained_nnn / "checkpoint" / "last_checkpoint")
    losses = ckpt["train_losses"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    keys = list(ckpt["model_state_dict"])
    assert "_orig_mod.noise_model.day_weights.0" in keys and "_orig_mod.clean_speech_model.day_biases.2" in keys
    assert any(k.startswith("_orig_mod.noisy_speech_model.gru.") for k in keys)
    assert len(ckpt["optimizer_state_dict"]["param_groups"]) == 8
    log = (trained_nnn / "training_log").read_text()
    assert "Train batch 10: loss:" in log and "noisy_loss:" in log and "noise_rms_rel:" in log
    assert "grl_lambda: 0 " in log  # batch 0: the dann schedule's lambda 0 (GRL skipped)
    assert "noisy PER:" in log and "Val batch 29: PER (avg):" in log
    with open(trained_nnn / "checkpoint" / "val_metrics.pkl", "rb") as fh:
        metrics = pickle.load(fh)
    assert 0.0 <= metrics["noisy_PER"] < 5 and metrics["avg_PER"] == load_checkpoint_file(
        trained_nnn / "checkpoint" / "best_checkpoint")["val_PER"]


def test_lambda_zero_quirk_follows_the_config(tiny_data, tmp_path):
    from model_training_nnn.rnn_trainer import NNNTrainer

    for skip, expected in ((True, None), (False, 0.0)):
        trainer = NNNTrainer(load_config(NNN_SMALL, nnn_overrides(tiny_data, tmp_path / str(skip),
                                                                  **{"adversarial.grl_skip_when_zero": skip})))
        try:
            lam0, lam1 = trainer.grl_argument(0), trainer.grl_argument(15)
            assert (lam0 is None) if expected is None else float(lam0) == expected
            assert float(lam1) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # p = 0.5 with gamma 10
            assert trainer.model.grl_skip_when_zero is skip
        finally:
            trainer.close()


def test_an_nnn_checkpoint_evaluates_through_evaluate_model(trained_nnn, tiny_data, tmp_path, capsys):
    from tests.model_training.test_evaluate_model import base_args, read_csv

    model, args = load_trained_model(trained_nnn)
    assert type(model).__name__ == "TripleGRUDecoder" and not model.training
    pkl = tmp_path / "results.pkl"
    assert evaluate_model.main(base_args(trained_nnn, tiny_data, tmp_path, "--lm", "none",
                                         "--results_pkl", str(pkl))) == 0
    texts = read_csv(tmp_path)
    with open(pkl, "rb") as fh:
        res = pickle.load(fh)
    assert len(texts) == 7 and texts == [" ".join(p) for p in res["greedy_phonemes"]]
    assert res["logits"][0].dtype == np.float32 and res["logits"][0].shape[1] == 41
    assert capsys.readouterr().out.strip().splitlines()[-1].split()[:2] == ["all", "7"]


@pytest.mark.slow
def test_an_nnn_checkpoint_through_the_redis_lm_protocol(trained_nnn, tiny_data, tmp_path):
    from model_training.inference import infer_trial
    from nejm_b2txt_utils import redis_protocol as rp
    from nejm_b2txt_utils.phonemes import model_to_lm_order
    from nejm_b2txt_utils.redis_server import RedisServer
    from tests.model_training.test_evaluate_model import FakeLM, _letters, base_args, read_csv, val_trials

    model, model_args = load_trained_model(trained_nnn)
    transforms = model_args.dataset.data_transforms
    subset = list(model_args.dataset.feature_subset)
    expected = [rp.encode_logits(model_to_lm_order(infer_trial(model, t.input_features[:, subset], day, "cpu",
                                                               transforms))) for day, t in val_trials(tiny_data)]
    with RedisServer() as server:
        lm = FakeLM(server)
        try:
            code = evaluate_model.main(base_args(trained_nnn, tiny_data, tmp_path, "--redis_port", str(server.port),
                                                 "--redis_timeout", "10"))
        finally:
            lm.close()
    assert code == 0 and lm.payloads == expected  # the clean head's logits, LM order, one message per trial
    assert read_csv(tmp_path) == [f"i heard {_letters(len(e) // 164)} frames" for e in expected]


def test_run_demo_recipe_nnn_trains_the_nnn_model_into_its_own_folder():
    from end_to_end import run_demo

    args = run_demo.parse_args(["--recipe", "nnn", "--quick"])
    p = run_demo.plan(args)
    assert p["out"] == REPO / "runs" / "demo_nnn_quick"  # --quick never shares the full run's folder
    train = next(s for s in run_demo.build_steps(args, p) if s.name == "train")
    assert train.cmd[1:4] == [str(REPO / "model_training_nnn" / "train_model.py"), "--config", str(NNN_SMALL)]
    baseline = run_demo.plan(run_demo.parse_args(["--quick"]))
    assert baseline["out"] == REPO / "runs" / "demo_quick"
