"""Trials too short for the model (0 bins, or fewer than the smoothing taps + one patch) at evaluation."""

import logging
import shutil

import h5py
import numpy as np

from model_training import evaluate_model
from model_training.checkpoint import load_trained_model
from model_training.inference import infer_trial, min_trial_bins
from tests.model_training.test_evaluate_model import N_VAL, base_args, read_csv


def _shorten(data_root, session: str, lengths: dict[str, int]) -> None:
    """Cut the named val trials of ``session`` to the given number of bins (0 allowed)."""
    path = data_root / "hdf5_data_final" / session / "data_val.hdf5"
    with h5py.File(path, "r+") as h5:
        for key, n in lengths.items():
            x = h5[key]["input_features"][:n]
            del h5[key]["input_features"]
            h5[key].create_dataset("input_features", data=x.astype(np.float32))
            h5[key].attrs["n_time_steps"] = n


def test_min_trial_bins_and_infer_on_too_short_trials(trained_model):
    model, args = load_trained_model(trained_model, "cpu")
    tf = args.dataset.data_transforms
    assert min_trial_bins(model, tf) == 9 - 1 + 14  # 9 smoothing taps ('valid') + one 14-bin patch
    for t in (0, 1, 8, 21):
        out = infer_trial(model, np.zeros((t, 512), np.float32), 0, "cpu", tf)
        assert out.shape == (0, 41)
    assert infer_trial(model, np.zeros((22, 512), np.float32), 0, "cpu", tf).shape == (1, 41)


def test_evaluation_keeps_a_row_for_a_0_bin_and_a_5_bin_trial(trained_model, tiny_data, tmp_path, caplog,
                                                              monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    sessions = sorted(p.name for p in (data / "hdf5_data_final").iterdir() if (p / "data_val.hdf5").exists())
    _shorten(data, sessions[0], {"trial_0000": 0, "trial_0001": 5})
    with caplog.at_level(logging.WARNING):
        assert evaluate_model.main(base_args(trained_model, data, tmp_path / "none", "--lm", "none")) == 0
    texts = read_csv(tmp_path / "none")
    assert len(texts) == N_VAL and texts[:2] == ["", ""] and all(texts[2:])
    warned = [r.getMessage() for r in caplog.records if "empty prediction" in r.getMessage()]
    assert len(warned) == 2 and sessions[0] in warned[0] and "trial_0000" in warned[0] and "0 bins" in warned[0]
    assert "trial_0001" in warned[1] and "5 bins, fewer than the 22" in warned[1]

    sent = []

    class FakeClient:  # the LM is asked only about trials with logits
        def decode_many(self, items, *_args):
            for rec, logits in items:
                sent.append(logits.shape[0])
                yield rec, "p", {"candidate_sentences": ["hello world"]}

        def server_args(self):  # redis_protocol.LMClient: no server published its arguments
            return None

    monkeypatch.setattr(evaluate_model, "connect_lm", lambda args: FakeClient())
    assert evaluate_model.main(base_args(trained_model, data, tmp_path / "lm")) == 0
    texts = read_csv(tmp_path / "lm")
    assert texts == ["", ""] + ["hello world"] * (N_VAL - 2)
    assert len(sent) == N_VAL - 2 and min(sent) > 0
