import h5py
import numpy as np
import pytest

from nejm_b2txt_utils.description_csv import (
    BlockRow,
    CorpusLookup,
    read_description_csv,
    write_description_csv,
)
from nejm_b2txt_utils.t15_hdf5 import (
    LABEL_PAD_LENGTH,
    T15File,
    T15FormatError,
    Trial,
    data_file_path,
    list_sessions,
    load_h5py_file,
    n_output_frames,
    write_trials,
)


def _trial(i, t=60, labels=True):
    rng = np.random.default_rng(i)
    return Trial(
        input_features=rng.standard_normal((t, 512)).astype(np.float32),
        session="t15.2023.08.13", block_num=2, trial_num=i,
        seq_class_ids=np.array([16, 6, 40]) if labels else None,
        sentence_label="Hi!" if labels else None, transcription="Hi!" if labels else None,
    )


def test_round_trip_keeps_every_field(tmp_path):
    path = data_file_path(tmp_path, "t15.2023.08.13", "train")
    assert write_trials(path, (_trial(i) for i in range(3))) == 3
    with h5py.File(path) as f:  # the original's raw layout
        assert list(f.keys()) == ["trial_0000", "trial_0001", "trial_0002"]
        g = f["trial_0001"]
        assert g["input_features"].shape == (60, 512) and g["input_features"].dtype == np.float32
        assert g["seq_class_ids"].shape == (LABEL_PAD_LENGTH,) and g.attrs["seq_len"] == 3
        assert g["transcription"][:4].tolist() == [72, 105, 33, 0]
        assert g.attrs["n_time_steps"] == 60 and g.attrs["session"] == "t15.2023.08.13"
    with T15File(path) as f:
        assert len(f) == 3
        t = f.read_trial(1)
        np.testing.assert_array_equal(t.input_features, _trial(1).input_features)
        assert t.seq_class_ids.tolist() == [16, 6, 40] and t.seq_len == 3
        assert (t.sentence_label, t.transcription, t.block_num, t.trial_num) == ("Hi!", "Hi!", 2, 1)
    assert list_sessions(tmp_path) == ["t15.2023.08.13"]
    data = load_h5py_file(path, corpus_lookup=lambda s, b: "Switchboard")
    assert data["corpus"] == ["Switchboard"] * 3 and data["seq_len"] == [3, 3, 3]


def test_test_files_have_no_labels(tmp_path):
    path = tmp_path / "data_test.hdf5"
    write_trials(path, [_trial(0)], with_labels=False)
    with h5py.File(path) as f:
        assert "seq_class_ids" not in f["trial_0000"] and "seq_len" not in f["trial_0000"].attrs
    t = T15File(path).read_trial(0)
    assert t.seq_class_ids is None and t.sentence_label is None and not t.has_labels


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "data_train.hdf5"
    bad = _trial(0)
    bad.seq_class_ids = np.ones(LABEL_PAD_LENGTH + 1, dtype=int)
    with pytest.raises(ValueError, match="exceed"):
        write_trials(path, [_trial(1), bad])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "mutate, field, expected",
    [
        (lambda g: (g.__delitem__("input_features"), g.create_dataset("input_features", data=np.zeros((60, 256), np.float32))),
         "input_features", r"expected shape \[T, 512\], got \[60, 256\]"),
        (lambda g: g["input_features"].__setitem__((5, 7), np.nan), "input_features", "non-finite value nan at bin 5, channel 7"),
        (lambda g: g.attrs.__setitem__("n_time_steps", 61), "n_time_steps", "61 but input_features has 60 rows"),
        (lambda g: g.attrs.__delitem__("session"), "session", "missing attribute"),
        (lambda g: g.attrs.__setitem__("seq_len", 501), "seq_len", "exceeds the stored label length"),
    ],
)
def test_validation_names_file_trial_and_field(tmp_path, mutate, field, expected):
    path = tmp_path / "data_train.hdf5"
    write_trials(path, [_trial(0), _trial(1)])
    with h5py.File(path, "r+") as f:
        mutate(f["trial_0001"])
    with T15File(path) as f:
        f.read_trial(0)
        with pytest.raises(T15FormatError) as exc:
            f.read_trial(1)
    msg = str(exc.value)
    assert str(path) in msg and "trial_0001" in msg and f"'{field}'" in msg
    assert __import__("re").search(expected, msg)


def test_labels_longer_than_the_trial_allows_are_rejected(tmp_path):
    path = tmp_path / "data_train.hdf5"
    t = _trial(0, t=30)  # 30 bins -> 5 output frames
    t.seq_class_ids = np.arange(1, 9)
    write_trials(path, [t])
    assert n_output_frames(30) == 5
    with pytest.raises(T15FormatError, match="8 labels but the trial has only 5 output frames"):
        T15File(path).read_trial(0)


def test_not_hdf5_and_missing_file(tmp_path):
    junk = tmp_path / "data_train.hdf5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(T15FormatError, match="not a readable HDF5"):
        T15File(junk)
    with pytest.raises(FileNotFoundError, match="not found"):
        T15File(tmp_path / "missing.hdf5")


def test_description_csv_round_trip_and_lookup(tmp_path):
    rows = [BlockRow("2023-08-13", 27, 2, 40, "Switchboard", "Train"),
            BlockRow("2023-08-13", 27, 5, 30, "Harvard", "Val/Test")]
    path = tmp_path / "desc.csv"
    write_description_csv(rows, path)
    assert path.read_text().splitlines()[0] == "Date,Post-implant day,Block number,Number of sentences,Corpus,Split"
    assert read_description_csv(path) == rows
    lookup = CorpusLookup.from_csv(path)
    assert lookup("t15.2023.08.13", 5) == "Harvard" and lookup("t15.2023.08.13", 9) == "unknown"
    path.write_text("Date,Block number\n2023-08-13,2\n")
    with pytest.raises(ValueError, match="missing column"):
        read_description_csv(path)


def test_the_labels_vs_frames_check_uses_the_models_patching(tmp_path):
    """Reported: the check always assumed 14/4 patching, so a trial a patch-1 model can align (the nnn small
    config: patch 1, stride 4) was refused as a format error."""
    path = tmp_path / "data_train.hdf5"
    t = _trial(0, t=30)  # 30 bins: 5 output frames at 14/4, 8 at 1/4
    t.seq_class_ids = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    write_trials(path, [t])
    assert (n_output_frames(30, 14, 4), n_output_frames(30, 1, 4)) == (5, 8)
    with pytest.raises(T15FormatError, match="8 labels but the trial has only 5 output frames"):
        T15File(path).read_trial(0)
    assert list(T15File(path, patching=(1, 4)).read_trial(0).seq_class_ids) == list(range(1, 9))
    assert T15File(path, patching=None).read_trial(0).seq_len == 8  # evaluation decodes it whatever the labels
    t.seq_class_ids = np.arange(1, 10)
    write_trials(path, [t])
    with pytest.raises(T15FormatError, match="9 labels but the trial has only 8 output frames"):
        T15File(path, patching=(1, 4)).read_trial(0)
