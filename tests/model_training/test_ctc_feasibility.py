"""Issue 13 case 4: a CTC-infeasible train trial is skipped at load, and no single trial ends a run."""

import logging
import shutil

import numpy as np
import pytest

from model_training import run_setup
from model_training.rnn_trainer import BrainToTextDecoder_Trainer, NonFiniteTrainingError
from nejm_b2txt_utils.lexicon import sentence_to_phonemes
from nejm_b2txt_utils.phonemes import phonemes_to_model_ids
from nejm_b2txt_utils.t15_hdf5 import (
    T15File,
    Trial,
    ctc_feasible,
    ctc_min_frames,
    n_output_frames,
    write_trials,
)

from .conftest import tiny_config

BAD_BINS = 60  # minus the largest random cut (2 bins) -> exactly 12 output frames at 14/4 patching


def unknown_unknown() -> np.ndarray:
    phonemes, _ = sentence_to_phonemes("unknown unknown")
    assert phonemes == ["AH", "N", "N", "OW", "N", "SIL", "AH", "N", "N", "OW", "N", "SIL"]
    return np.asarray(phonemes_to_model_ids(phonemes), dtype=np.int32)


def test_labels_plus_adjacent_repeats_against_frames_after_the_largest_cut():
    ids = unknown_unknown()
    assert len(ids) == 12 and ctc_min_frames(ids) == 14  # two "N N"
    assert n_output_frames(BAD_BINS - 2) == 12  # labels alone (12 <= 12) pass: the old check
    assert ctc_feasible(BAD_BINS, ids, 14, 4, max_cut=2) == (False, 14, 12)
    assert ctc_feasible(BAD_BINS + 8, ids, 14, 4, max_cut=2) == (True, 14, 14)
    assert ctc_feasible(BAD_BINS + 8, ids, 14, 4, max_cut=0) == (True, 14, 14)
    assert ctc_feasible(BAD_BINS + 6, ids, 14, 4, max_cut=2) == (False, 14, 13)
    assert ctc_min_frames([]) == 0 and ctc_min_frames([5, 5, 5]) == 5


@pytest.fixture(scope="module")
def data_with_bad_trial(tiny_data, tmp_path_factory):
    """tiny, with the first session's train file = 3 of its trials + "unknown unknown" in 60 bins (trial_0003)."""
    root = tmp_path_factory.mktemp("bad_trial")
    shutil.copytree(tiny_data / "hdf5_data_final", root / "hdf5_data_final")
    path = sorted((root / "hdf5_data_final").iterdir())[0] / "data_train.hdf5"
    with T15File(path) as f:
        trials = [f.read_trial(t) for t in range(3)]
    rng = np.random.default_rng(0)
    trials.append(Trial(input_features=rng.standard_normal((BAD_BINS, 512)).astype(np.float32),
                        session=trials[0].session, block_num=99, trial_num=7, seq_class_ids=unknown_unknown(),
                        transcription="unknown unknown", sentence_label="unknown unknown"))
    write_trials(path, trials)
    return root, path


def test_infeasible_trial_is_skipped_at_load_with_a_warning_and_training_proceeds(data_with_bad_trial, tmp_path,
                                                                                   caplog):
    root, path = data_with_bad_trial
    caplog.set_level(logging.WARNING, logger="model_training.dataset")
    trainer = BrainToTextDecoder_Trainer(tiny_config(root, tmp_path / "run", num_training_batches=6,
                                                     batches_per_val_step=100))
    try:
        warnings = [r.getMessage() for r in caplog.records if "skipped for training" in r.getMessage()]
        assert len(warnings) == 1
        assert str(path) in warnings[0] and "trial_0003 (block 99, trial 7)" in warnings[0]
        assert "12 labels + 2 adjacent repeats need 14 CTC frames, but 60 bins leave 12" in warnings[0]
        assert trainer.train_dataset.trial_indicies[0]["trials"] == [0, 1, 2]
        out = trainer.train()
        assert len(out["train_losses"]) == 6 and np.isfinite(out["train_losses"]).all()
        assert trainer.n_nonfinite_batches == 0
    finally:
        trainer.close()


def test_a_non_finite_batch_is_skipped_and_named(data_with_bad_trial, tmp_path, monkeypatch, caplog):
    """Without the load-time filter the bad trial reaches a batch: that step is skipped, the run goes on."""
    root, _ = data_with_bad_trial
    monkeypatch.setattr(run_setup, "drop_ctc_infeasible", lambda trials, *a, **k: trials)  # the load-time filter
    trainer = BrainToTextDecoder_Trainer(tiny_config(root, tmp_path / "run", num_training_batches=8,
                                                     batches_per_val_step=100))
    try:
        before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        caplog.set_level(logging.WARNING)
        trainer.logger.propagate = True
        out = trainer.train()
        losses = np.asarray(out["train_losses"])
        assert len(losses) == 8
        skipped = int((~np.isfinite(losses)).sum())
        assert 1 <= skipped < 8 and trainer.n_nonfinite_batches == skipped
        msgs = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
        assert len(msgs) == skipped and "block 99 trial 7" in msgs[0]
        assert all(np.isfinite(v.float().numpy()).all() for v in trainer.model.state_dict().values())
        assert any(not (before[k] == v).all() for k, v in trainer.model.state_dict().items())  # it did learn
    finally:
        trainer.close()


def test_a_run_where_every_batch_is_non_finite_stops_with_a_clear_error(cfg_factory):
    trainer = BrainToTextDecoder_Trainer(cfg_factory("nan", num_training_batches=5, batches_per_val_step=100))
    compute_loss = trainer.compute_loss

    def nan_loss(*args):
        objective, logged, extra = compute_loss(*args)
        return objective * float("nan"), logged, extra

    trainer.compute_loss = nan_loss
    try:
        with pytest.raises(NonFiniteTrainingError, match=r"batches 0\.\.4: 5 batches in a row had a non-finite"):
            trainer.train()
        assert trainer.n_nonfinite_batches == 5
    finally:
        trainer.close()


def test_an_infeasible_val_trial_leaves_the_val_loss_finite(data_with_bad_trial, tmp_path):
    """The bad trial in a val file: its PER counts, its infinite CTC loss does not make the average infinite."""
    root, train_path = data_with_bad_trial
    val_root = tmp_path / "data"
    shutil.copytree(root / "hdf5_data_final", val_root / "hdf5_data_final")
    session_dir = sorted((val_root / "hdf5_data_final").iterdir())[1]  # the first session has no val file
    with T15File(train_path) as f:
        bad = f.read_trial(3)
    with T15File(session_dir / "data_val.hdf5") as f:
        trials = [f.read_trial(t) for t in range(len(f))]
    bad.session = trials[0].session
    write_trials(session_dir / "data_val.hdf5", [*trials, bad])
    trainer = BrainToTextDecoder_Trainer(tiny_config(val_root, tmp_path / "run", num_training_batches=1))
    try:
        m = trainer.validation(trainer.val_loader)
        assert np.isfinite(m["avg_loss"]) and 0 < m["avg_loss"] < 1e4
        scored = list(zip(np.concatenate(m["block_nums"]).tolist(), np.concatenate(m["trial_nums"]).tolist()))
        assert len(scored) == sum(len(d["trials"]) for d in trainer.val_dataset.trial_indicies.values())
        assert (99, 7) in scored  # the bad trial was scored (PER), not dropped
    finally:
        trainer.close()
