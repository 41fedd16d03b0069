import shutil
import subprocess
import sys

import pytest
import torch

from model_training import checkpoint as ck

from .conftest import REPO


def test_prefixes_are_stripped_in_any_order_and_always_saved():
    t = torch.zeros(1)
    sd = {"_orig_mod.h0": t, "module._orig_mod.gru.bias_ih_l0": t, "_orig_mod.module.out.bias": t, "out.weight": t}
    assert list(ck.strip_prefixes(sd)) == ["h0", "gru.bias_ih_l0", "out.bias", "out.weight"]
    assert list(ck.with_compile_prefix(sd)) == ["_orig_mod.h0", "_orig_mod.gru.bias_ih_l0", "_orig_mod.out.bias",
                                                "_orig_mod.out.weight"]


def test_atomic_save_leaves_only_the_target(tmp_path):
    ck.atomic_save({"model_state_dict": {"a": torch.ones(2)}}, tmp_path / "ckpt")
    ck.atomic_save({"x": 1}, tmp_path / "metrics.pkl", use_torch=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "metrics.pkl"]
    assert torch.equal(ck.load_checkpoint_file(tmp_path / "ckpt")["model_state_dict"]["a"], torch.ones(2))


@pytest.fixture
def model_copy(trained_model, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(trained_model / "checkpoint", dst / "checkpoint")
    return dst


def test_loads_the_trained_model_and_checks_keys(model_copy):
    model, args = ck.load_trained_model(model_copy)
    assert not model.training and len(args.dataset.sessions) == 3
    best = model_copy / "checkpoint" / "best_checkpoint"
    ckpt = torch.load(best, weights_only=False)
    ckpt["model_state_dict"]["_orig_mod.extra.weight"] = torch.zeros(1)
    del ckpt["model_state_dict"]["_orig_mod.h0"]
    torch.save(ckpt, best)
    with pytest.raises(ck.CheckpointError, match=r"missing keys \['h0'\].*unexpected keys \['extra.weight'\]"):
        ck.load_trained_model(model_copy)


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "not a readable torch checkpoint"),
    (None, "checkpoint file not found"),
])
def test_malformed_checkpoint_gives_one_line_cli_error(model_copy, content, message):
    best = model_copy / "checkpoint" / "best_checkpoint"
    if content is None:
        best.unlink()
    else:
        best.write_bytes(content)
    proc = subprocess.run([sys.executable, str(REPO / "model_training" / "evaluate_model.py"), "--model_path",
                           str(model_copy), "--gpu_number", "-1", "--lm", "none"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and str(best) in proc.stderr


@pytest.mark.parametrize("text, message", [
    ("model: [unclosed", "malformed YAML"),
    ("model:\n  n_units: 64\ndataset:\n  sessions: [a]\n  n_classes: 41\n", "missing key 'model.n_input_features'"),
    ("- a list\n", "expected a mapping"),
])
def test_malformed_args_yaml(model_copy, text, message):
    path = model_copy / "checkpoint" / "args.yaml"
    path.write_text(text)
    with pytest.raises(ck.CheckpointError, match=message) as err:
        ck.load_trained_model(model_copy)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_args_that_do_not_fit_the_weights(model_copy):
    path = model_copy / "checkpoint" / "args.yaml"
    path.write_text(path.read_text().replace("n_units: 64", "n_units: 32"))
    with pytest.raises(ck.CheckpointError, match="shape mismatch"):
        ck.load_trained_model(model_copy)
