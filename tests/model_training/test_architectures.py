"""The model-building table (``model_training/architectures.py``), the output-frame rule and its torch twin,
and the framework-free modules both trainers share (no torch on import)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from model_training import architectures
from model_training.checkpoint import build_model
from model_training.rnn_model import output_frames
from nejm_b2txt_utils.cli_errors import ConfigError
from nejm_b2txt_utils.t15_hdf5 import n_output_frames


def _args(arch: str | None) -> OmegaConf:
    model = {"n_input_features": 8, "n_units": 16, "n_layers": 2, "rnn_dropout": 0.0, "patch_size": 2,
             "patch_stride": 1, "input_network": {"input_layer_dropout": 0.0}, "n_noise_layers": 1,
             "n_clean_layers": 1, "n_noisy_layers": 1}
    if arch is not None:
        model["architecture"] = arch
    return OmegaConf.create({"model": model, "dataset": {"sessions": ["a", "b", "c"], "n_classes": 41}})


def test_shared_kwargs_are_read_once_and_each_builder_adds_its_own():
    assert architectures.shared_model_kwargs(_args(None)) == dict(
        neural_dim=8, n_units=16, n_days=3, n_classes=41, rnn_dropout=0.0, input_dropout=0.0, patch_size=2,
        patch_stride=1)
    gru = build_model(_args(None))
    assert type(gru).__name__ == "GRUDecoder" and gru.n_layers == 2 and gru.n_days == 3
    triple = build_model(_args("triple_gru"))
    assert type(triple).__name__ == "TripleGRUDecoder"
    assert triple.noise_model.gru.num_layers == 1 and triple.clean_speech_model.gru.num_layers == 1
    assert triple(torch.zeros(2, 10, 8), torch.tensor([0, 2])).shape == (2, 9, 41)


def test_an_unknown_architecture_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"model.architecture: expected one of \['gru', 'triple_gru'\], got 'lstm'"):
        build_model(_args("lstm"))


def test_a_triple_gru_args_yaml_builds_without_importing_the_variant_first():
    """checkpoint.build_model finds the variant through the one PROVIDERS table (what evaluate_model.py relies on)."""
    code = ("import sys; from omegaconf import OmegaConf; from model_training.checkpoint import build_model; "
            "assert 'model_training_nnn.rnn_model' not in sys.modules; "
            "m = {'n_input_features': 4, 'n_units': 8, 'n_layers': 1, 'rnn_dropout': 0.0, 'patch_size': 2, "
            "'patch_stride': 1, 'input_network': {'input_layer_dropout': 0.0}, 'architecture': 'triple_gru'}; "
            "a = OmegaConf.create({'model': m, 'dataset': {'sessions': ['s'], 'n_classes': 41}}); "
            "print(type(build_model(a)).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "TripleGRUDecoder"


def test_shared_training_modules_import_no_framework():
    mods = ["model_training.architectures", "model_training.run_setup", "model_training.trial_batches",
            "model_training.training_loop", "model_training.args_yaml", "model_training.lr_schedule",
            "model_training_nnn.adversarial", "nejm_b2txt_utils.smoothing_kernel"]
    code = (f"import sys; [__import__(m) for m in {mods!r}]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("patch_size,patch_stride", [(14, 4), (1, 4), (3, 2), (0, 0)])
def test_the_torch_twin_gives_the_output_frame_rule(patch_size, patch_stride):
    n = np.arange(0, 60)
    want = [n_output_frames(int(x), patch_size, patch_stride) for x in n]
    got = output_frames(torch.from_numpy(n), patch_size, patch_stride)
    assert got.dtype == torch.int32 and got.tolist() == want
    assert n_output_frames(30, 14, 4) == 5 and n_output_frames(10, 14, 4) == 0
