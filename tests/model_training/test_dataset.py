import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from model_training.dataset import BATCH_KEYS, BrainToTextDataset, train_test_split_indicies
from nejm_b2txt_utils.t15_hdf5 import T15File, list_sessions


@pytest.fixture(scope="module")
def paths(tiny_data):
    root = tiny_data / "hdf5_data_final"
    sessions = list_sessions(root)
    return {split: [str(root / s / f"data_{split}.hdf5") for s in sessions] for split in ("train", "val")}


def test_split_keeps_day_keys_for_missing_files_and_drops_bad_trials(paths):
    train, test = train_test_split_indicies(paths["train"], test_percentage=0, seed=1)
    assert list(train) == [0, 1, 2] and all(test[d]["trials"] == [] for d in test)
    assert train[0]["trials"] == list(range(20))
    _, val = train_test_split_indicies(paths["val"], test_percentage=1, seed=1)
    assert val[0]["trials"] == [] and val[0]["session_path"] == paths["val"][0]  # no val file for day 0
    assert val[1]["trials"] == [0, 1, 2] and len(val[2]["trials"]) == 4
    with T15File(paths["train"][1]) as f:
        meta = f.read_meta(3)
    session = paths["train"][1].split("/")[-2]
    bad = {session: {str(meta["block_num"]): [meta["trial_num"]]}}
    train_bad, _ = train_test_split_indicies(paths["train"], test_percentage=0, bad_trials_dict=bad)
    assert 3 not in train_bad[1]["trials"] and len(train_bad[1]["trials"]) == 13
    tr, te = train_test_split_indicies(paths["train"], test_percentage=0.25, seed=3)
    assert len(te[0]["trials"]) == 5 and sorted(tr[0]["trials"] + te[0]["trials"]) == list(range(20))


def reference_train_index(trials, n_batches, batch_size, days_per_batch, seed):
    """The original's draws, written from the spec (§3.3): choice of days, then trials with replacement."""
    np.random.seed(seed)
    out = []
    for _ in range(n_batches):
        days = np.random.choice(list(trials), size=days_per_batch, replace=False)
        per_day = math.ceil(batch_size / days_per_batch)
        batch = {d: np.random.choice(trials[d]["trials"], size=per_day, replace=True) for d in days}
        extra = per_day * len(days) - batch_size
        while extra > 0:
            d = np.random.choice(days)
            batch[d] = batch[d][:-1]
            extra -= 1
        out.append(batch)
    return out


def test_train_batch_index_reproduces_the_original_draws(paths):
    train, _ = train_test_split_indicies(paths["train"], test_percentage=0)
    ds = BrainToTextDataset(train, 50, "train", batch_size=10, days_per_batch=3, random_seed=1)
    ref = reference_train_index(train, 50, 10, 3, 1)
    for b in range(50):
        got = ds.batch_index[b]
        assert list(got) == [int(d) for d in ref[b]]
        for d in got:
            assert got[d].tolist() == ref[b][d].tolist()
        assert sum(len(v) for v in got.values()) == 10
    assert len(ds) == 50
    with pytest.raises(ValueError, match="days_per_batch"):
        BrainToTextDataset(train, 5, "train", batch_size=8, days_per_batch=4)
    with pytest.raises(ValueError, match="split"):
        BrainToTextDataset(train, 5, "val")


def test_batches_are_padded_with_the_original_keys(paths):
    train, _ = train_test_split_indicies(paths["train"], test_percentage=0)
    ds = BrainToTextDataset(train, 3, "train", batch_size=8, days_per_batch=2, random_seed=1)
    batch = ds[0]
    assert set(batch) == set(BATCH_KEYS)
    pairs = ds.batch_trials(0)
    assert batch["day_indicies"].tolist() == [d for d, _ in pairs]
    x, n = batch["input_features"], batch["n_time_steps"]
    assert x.shape == (8, int(n.max()), 512) and x.dtype == torch.float32
    b = int(n.argmin())
    assert torch.all(x[b, int(n[b]):] == 0)  # zero right-padding
    day, t = pairs[b]
    with T15File(train[day]["session_path"]) as f:
        trial = f.read_trial(t)
    assert torch.equal(x[b, :int(n[b])], torch.from_numpy(trial.input_features))
    assert batch["seq_class_ids"][b, :int(batch["phone_seq_lens"][b])].tolist() == trial.seq_class_ids.tolist()
    assert batch["transcriptions"].shape == (8, 500)
    assert "".join(chr(c) for c in batch["transcriptions"][b].tolist() if c) == trial.transcription
    assert batch["trial_nums"][b] == trial.trial_num and batch["block_nums"][b] == trial.block_num


def test_val_batches_hold_one_day_each_in_file_order(paths):
    _, val = train_test_split_indicies(paths["val"], test_percentage=1)
    ds = BrainToTextDataset(val, None, "test", batch_size=3, random_seed=1)
    assert [list(b.items()) for b in ds.batch_index.values()] == [[(1, [0, 1, 2])], [(2, [0, 1, 2])], [(2, [3])]]
    assert len(ds) == 3 and ds[2]["day_indicies"].tolist() == [2]


def test_shards_partition_every_batch_and_workers_match(paths):
    train, _ = train_test_split_indicies(paths["train"], test_percentage=0)
    full = BrainToTextDataset(train, 4, "train", batch_size=8, days_per_batch=2, random_seed=1)
    shards = [BrainToTextDataset(train, 4, "train", batch_size=8, days_per_batch=2, random_seed=1).shard(r, 2)
              for r in range(2)]
    for b in range(4):
        assert shards[0].batch_trials(b) + shards[1].batch_trials(b) == full.batch_trials(b)
        assert len(shards[0].batch_trials(b)) == 4
    via_workers = list(DataLoader(full, batch_size=None, num_workers=1))
    for b in range(4):
        for k in BATCH_KEYS:
            assert torch.equal(via_workers[b][k], full[b][k])
