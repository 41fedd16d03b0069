"""Issue 23's recipes: the streaming Transformer row, one shared input layer, ensembles, checkpoint averaging and
seeds (time masking itself: tests/nejm_b2txt_utils/test_masking.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from model_training import average_checkpoints, evaluate_model, train_seeds
from model_training.checkpoint import build_model, load_checkpoint_file, load_trained_model
from model_training.config import load_config
from model_training.ensemble import EnsembleModel, check_compatible, mix_log_probs
from model_training.rnn_trainer import BrainToTextDecoder_Trainer
from model_training.transformer_model import CausalTransformerDecoder
from nejm_b2txt_utils.cli_errors import ConfigError

from .conftest import REPO, tiny_overrides
from .test_evaluate_model import base_args


def small_transformer(**kw) -> CausalTransformerDecoder:
    torch.manual_seed(0)
    args = dict(neural_dim=16, n_units=32, n_days=2, n_classes=41, n_layers=2, n_heads=4, left_context=3,
                patch_size=14, patch_stride=4)
    return CausalTransformerDecoder(**{**args, **kw}).eval()


@pytest.mark.parametrize("chunk", [3, 5, 14, 37])
def test_transformer_streaming_chunks_equal_the_whole_trial(chunk):
    model = small_transformer()
    x, day = torch.randn(2, 150, 16), torch.tensor([1, 0])
    with torch.no_grad():
        whole = model(x, day)  # (2, 35, 41)
        state, parts = None, []
        for start in range(0, 150, chunk):
            logits, state = model(x[:, start:start + chunk], day, states=state, return_state=True)
            parts.append(logits)
    streamed = torch.cat(parts, dim=1)
    assert whole.shape == streamed.shape == (2, (150 - 14) // 4 + 1, 41)
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)
    assert state.pending.shape[1] == 150 - 35 * 4  # bins waiting for the next patch
    assert all(k.shape[2] == 3 for k, _ in state.kv)  # the cache holds left_context frames, no more


def test_transformer_attends_only_its_left_context():
    model = small_transformer()  # 2 layers x 3 frames: frame i sees patches i-6 .. i
    x, day = torch.randn(1, 120, 16), torch.tensor([0])
    y = x.clone()
    y[:, :4] += 5.0  # bins 0-3 are in patch 0 only
    with torch.no_grad():
        a, b = model(x, day), model(y, day)
    changed = (a - b).abs().amax(dim=2)[0] > 1e-6
    assert changed[:7].all() and not changed[7:].any()


def _tiny_cfg(tiny_data, out: Path, config: str = "rnn_args.yaml", **extra):
    kw = dict(num_training_batches=6, lr_decay_steps=6, lr_decay_steps_day=6, lr_warmup_steps=1,
              lr_warmup_steps_day=1, batches_per_val_step=5, save_all_val_steps="true")
    kw.update(extra)
    return load_config(REPO / "model_training" / config, tiny_overrides(tiny_data, out, **kw))


def _train(cfg):
    trainer = BrainToTextDecoder_Trainer(cfg)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    return trainer, result


@pytest.fixture(scope="module")
def shared_layer_gru(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recipes") / "gru_shared"
    _train(_tiny_cfg(tiny_data, out, **{"model.day_layers": "false", "dataset.data_transforms.time_mask_count": 2,
                                        "dataset.data_transforms.speckle_mask_prob": 0.05}))
    return out


@pytest.fixture(scope="module")
def transformer_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recipes") / "transformer"
    _train(_tiny_cfg(tiny_data, out, "rnn_args_transformer.yaml", **{"model.n_units": 32, "model.n_layers": 1,
                                                                    "model.n_heads": 4, "model.left_context": 4}))
    return out


def test_day_layers_false_trains_with_one_input_layer_and_round_trips(shared_layer_gru):
    ckpt = load_checkpoint_file(shared_layer_gru / "checkpoint" / "best_checkpoint")
    day_keys = sorted(k for k in ckpt["model_state_dict"] if "day_" in k)
    assert day_keys == ["_orig_mod.day_biases.0", "_orig_mod.day_weights.0"]
    assert not torch.equal(ckpt["model_state_dict"]["_orig_mod.day_weights.0"], torch.eye(512))  # it trained
    model, args = load_trained_model(shared_layer_gru)
    assert args.model.day_layers is False and len(args.dataset.sessions) == 3 and model.n_days == 1
    x = torch.randn(1, 60, 512)
    with torch.no_grad():  # every session goes through the one shared layer
        assert torch.equal(model(x, torch.tensor([0])), model(x, torch.tensor([2])))
        rebuilt = build_model(args).eval()
        rebuilt.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model_state_dict"].items()})
        assert torch.equal(rebuilt(x, torch.tensor([1])), model(x, torch.tensor([1])))


def test_the_transformer_row_trains_and_loads_like_the_gru(transformer_run):
    model, args = load_trained_model(transformer_run)
    assert type(model).__name__ == "CausalTransformerDecoder" and args.model.architecture == "transformer"
    assert model.n_days == 1 and model.left_context == 4  # the overlay's day_layers: false
    assert args.dataset.data_transforms.time_mask_count == 10


def test_evaluator_ensembles_average_probabilities_into_one_stream(
        trained_model, shared_layer_gru, transformer_run, tiny_data, tmp_path):
    """One model == itself; the same model twice == its log-softmax; a GRU + Transformer mixture is the mean
    of their probabilities, trial by trial."""
    def evaluate(name, *paths):
        out = tmp_path / name
        out.mkdir()
        argv = base_args(paths[0], tiny_data, out, "--lm", "none", "--results_pkl", str(out / "r.pkl"))
        i = argv.index("--model_path")
        argv[i + 1:i + 2] = [str(p) for p in paths]
        assert evaluate_model.main(argv) == 0
        with open(out / "r.pkl", "rb") as fh:
            return pickle.load(fh)

    one = evaluate("one", trained_model)
    twice = evaluate("twice", trained_model, trained_model)
    for a, b in zip(one["logits"], twice["logits"]):
        np.testing.assert_allclose(b, torch.tensor(a).log_softmax(-1).numpy(), atol=1e-5)
    assert twice["greedy_phonemes"] == one["greedy_phonemes"]
    gru, tf = evaluate("gru", shared_layer_gru), evaluate("tf", transformer_run)
    mixed = evaluate("mixed", shared_layer_gru, transformer_run)
    for g, t, m in zip(gru["logits"], tf["logits"], mixed["logits"]):
        p = (torch.tensor(g).softmax(-1) + torch.tensor(t).softmax(-1)) / 2
        np.testing.assert_allclose(np.exp(m), p.numpy(), atol=1e-5)


def test_mixture_is_arithmetic_and_one_member_is_itself():
    p1, p2 = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.1, 0.9]])
    mixed = mix_log_probs([p1.log(), p2.log()]).exp()
    torch.testing.assert_close(mixed, torch.tensor([[0.5, 0.5]]))  # symmetric: a geometric mean gives this too
    p3 = torch.tensor([[0.5, 0.5]])
    torch.testing.assert_close(mix_log_probs([p1.log(), p3.log()]).exp(), torch.tensor([[0.7, 0.3]]))  # geometric: 0.75
    model = small_transformer()
    x, day = torch.randn(1, 40, 16), torch.tensor([0])
    with torch.no_grad():
        torch.testing.assert_close(EnsembleModel([model])(x, day), model(x, day).log_softmax(-1))


def test_models_with_another_frame_rate_cannot_be_ensembled():
    a = OmegaConf.create({"model": {"patch_size": 14, "patch_stride": 4}, "dataset": {"sessions": ["s"]}})
    b = OmegaConf.create({"model": {"patch_size": 14, "patch_stride": 2}, "dataset": {"sessions": ["s"]}})
    with pytest.raises(ConfigError, match=r"B/checkpoint/args.yaml: model.patch_stride is 2 but A's is 4"):
        check_compatible(["A", "B"], [a, b])


def test_averaging_identical_checkpoints_gives_the_checkpoint_and_two_give_the_mean(shared_layer_gru, tmp_path,
                                                                                     capsys):
    ckpt_dir = shared_layer_gru / "checkpoint"
    batches = sorted(ckpt_dir.glob("checkpoint_batch_*"))
    assert [p.name for p in batches] == ["checkpoint_batch_0", "checkpoint_batch_5"]
    best = load_checkpoint_file(ckpt_dir / "checkpoint_batch_5")["model_state_dict"]
    same = average_checkpoints.average_state_dicts([best, best, best])
    assert all(torch.equal(same[k.removeprefix("_orig_mod.")], v) for k, v in best.items())

    out = tmp_path / "avg2"
    assert average_checkpoints.main(["--model_path", str(shared_layer_gru), "--avg", "2", "--out_dir", str(out)]) == 0
    first = load_checkpoint_file(ckpt_dir / "checkpoint_batch_0")["model_state_dict"]
    averaged = load_checkpoint_file(out / "checkpoint" / "best_checkpoint")["model_state_dict"]
    key = "_orig_mod.out.weight"
    torch.testing.assert_close(averaged[key], (first[key] + best[key]) / 2)
    model, _ = load_trained_model(out)  # a model folder like any other
    assert model.n_days == 1
    assert average_checkpoints.main(["--model_path", str(shared_layer_gru), "--avg", "3"]) == 2
    assert "--avg 3 needs 3 checkpoint_batch_<i> files, found 2" in capsys.readouterr().err


def test_averaging_refuses_its_own_run_folder_nan_weights_and_other_models(shared_layer_gru, tmp_path, capsys):
    """New-user cases: --out_dir = --model_path replaced the run's best_checkpoint; a NaN tensor was averaged in;
    mismatched models were 'state dict 0 differs' naming neither file nor key."""
    best = shared_layer_gru / "checkpoint" / "best_checkpoint"
    before = best.read_bytes()
    assert average_checkpoints.main(["--model_path", str(shared_layer_gru), "--avg", "2", "--out_dir",
                                     str(shared_layer_gru)]) == 2
    assert "must be a new folder" in capsys.readouterr().err and best.read_bytes() == before

    sd = load_checkpoint_file(best)["model_state_dict"]
    bad = {k: v.clone() for k, v in sd.items()}
    bad["_orig_mod.out.bias"][3] = float("nan")
    torch.save({"model_state_dict": bad}, tmp_path / "nan_ckpt")
    assert average_checkpoints.main(["--model_path", str(shared_layer_gru), "--checkpoints", str(best),
                                     str(tmp_path / "nan_ckpt"), "--out_dir", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "state dict 1: 'out.bias' holds NaN or inf" in err and f"1 = {tmp_path / 'nan_ckpt'}" in err
    assert not (tmp_path / "o1").exists()

    other = {k: v for k, v in sd.items() if k != "_orig_mod.out.bias"}
    torch.save({"model_state_dict": other}, tmp_path / "other_ckpt")
    assert average_checkpoints.main(["--model_path", str(shared_layer_gru), "--checkpoints", str(best),
                                     str(tmp_path / "other_ckpt"), "--out_dir", str(tmp_path / "o2")]) == 2
    assert "state dict 0 has other keys than the last one: 'out.bias'" in capsys.readouterr().err


def test_train_seeds_runs_each_seed_into_its_own_folder(tiny_data, tmp_path):
    calls = []
    overrides = tiny_overrides(tiny_data, tmp_path / "runs")
    (tmp_path / "runs" / "seed_2").mkdir(parents=True)
    (tmp_path / "runs" / "seed_2" / "training_log").write_text("")
    assert train_seeds.main(["--seeds", "2", *overrides], train_main=lambda argv: calls.append(argv) or 0) == 0
    assert [c[-3:] for c in calls] == [["seed=1", "dataset.seed=1", f"output_dir={tmp_path / 'runs' / 'seed_1'}"],
                                       ["dataset.seed=2", f"output_dir={tmp_path / 'runs' / 'seed_2'}",
                                        "resume=true"]]
