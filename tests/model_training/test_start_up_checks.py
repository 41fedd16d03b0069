"""Start-up checks before anything is written (issue 22 cases 3 and 8): a failed start leaves no output_dir, and
data whose feature width is not model.n_input_features is one line naming the width and the key."""

import shutil

import h5py

from model_training import train_model
from tests.model_training.conftest import REPO, tiny_overrides

CONFIG = str(REPO / "model_training" / "rnn_args.yaml")


def test_no_data_or_no_init_checkpoint_creates_nothing(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    empty = tmp_path / "not_downloaded"
    empty.mkdir()
    argv = ["--config", CONFIG, *tiny_overrides(tiny_data, out), f"dataset.dataset_dir={empty}",
            "dataset.sessions=[t15.2023.08.11]"]
    assert train_model.main(argv) == 2
    err = capsys.readouterr().err
    assert "no data_train.hdf5" in err and "nothing was created" in err and not out.exists()
    for init in ("''", str(tmp_path / "missing.pt")):
        argv = ["--config", CONFIG, *tiny_overrides(tiny_data, out, init_from_checkpoint="true",
                                                    init_checkpoint_path=init)]
        assert train_model.main(argv) == 2
        assert "init_checkpoint_path" in capsys.readouterr().err and not out.exists()


def test_a_256_wide_corpus_needs_the_key_and_then_trains(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for path in (data / "hdf5_data_final").glob("*/data_*.hdf5"):
        with h5py.File(path, "r+") as h5:
            for g in h5.values():
                x = g["input_features"][:, :256]
                del g["input_features"]
                g.create_dataset("input_features", data=x)
    out = tmp_path / "run"
    base = ["--config", CONFIG, *tiny_overrides(data, out, num_training_batches=4, batches_per_val_step=4,
                                                batches_per_train_log=2)]
    assert train_model.main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input_features are 256 wide but model.n_input_features is 512" in err[0]
    assert "model.n_input_features=256" in err[0] and not out.exists()
    assert train_model.main([*base, "model.n_input_features=256"]) == 0
    assert (out / "checkpoint" / "best_checkpoint").is_file()
    assert "Error loading trial" not in (out / "training_log").read_text()
