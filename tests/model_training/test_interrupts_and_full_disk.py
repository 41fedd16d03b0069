"""Ctrl-C, kill -9 during a save and a full disk while training (issue 22 cases 6 and 7)."""

import errno
import os
import re
import signal
import threading

import pytest
import torch

from model_training import train_model
from nejm_b2txt_utils import atomic_io
from nejm_b2txt_utils.atomic_io import DiskFullError, atomic_path, sweep_stale_temp_files
from tests.model_training.conftest import REPO, tiny_overrides

CONFIG = str(REPO / "model_training" / "rnn_args.yaml")


def test_atomic_writes_on_a_full_disk_name_the_file_and_keep_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "best_checkpoint"
    path.write_bytes(b"previous")

    def full_disk(*_args):  # what torch.save raises when its zip writer hits ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 29467712 vs 29467600")

    with pytest.raises(DiskFullError) as info, atomic_path(path) as tmp:
        full_disk(tmp)
    assert str(info.value) == f"cannot save {path}: no space left on device; the previous best_checkpoint is kept"
    assert info.value.errno == errno.ENOSPC and path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["best_checkpoint"]  # no temp file left
    with pytest.raises(DiskFullError, match="nothing was written"), atomic_path(tmp_path / "new") as tmp:
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RuntimeError, match="something else"), atomic_path(path):
        raise RuntimeError("something else")  # other errors pass through unchanged


def test_training_on_a_full_disk_is_one_line_exit_2(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save(obj, f, *a, **kw):  # the saves of the second validation (batch 2) find the disk full
        calls.append(1)
        if len(calls) >= 3:
            real_save(obj, f, *a, **kw)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    argv = ["--config", CONFIG, *tiny_overrides(tiny_data, out, num_training_batches=4, batches_per_val_step=2)]
    assert train_model.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(rf"error: cannot save {out / 'checkpoint'}/(best|last)_checkpoint: no space left on device; the "
                     r"previous (best|last)_checkpoint is kept\n$", err), err[-300:]
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(out / "checkpoint" / "best_checkpoint", weights_only=False)["model_state_dict"]
    assert not [p for p in (out / "checkpoint").iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_saves_last_checkpoint_and_stale_temp_files_are_swept_on_resume(tiny_data, tmp_path, monkeypatch,
                                                                                caplog):
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer

    out = tmp_path / "run"
    real = BrainToTextDecoder_Trainer._train_one

    def train_one(self, batch, i):  # Ctrl-C arrives during batch 3 (defaults: last_checkpoint only at validation)
        if i == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, batch, i)

    monkeypatch.setattr(BrainToTextDecoder_Trainer, "_train_one", train_one)
    argv = ["--config", CONFIG, *tiny_overrides(tiny_data, out, num_training_batches=20, batches_per_val_step=100)]
    assert threading.current_thread() is threading.main_thread()
    assert train_model.main(argv) == 130
    log = (out / "training_log").read_text()
    assert "interrupted at batch 4; resume with resume=true" in log
    ckpt = torch.load(out / "checkpoint" / "last_checkpoint", weights_only=False)
    assert ckpt["step"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    # kill -9 during a save leaves a temp file beside the checkpoint: swept at resume, with a log line
    stale = out / "checkpoint" / ".best_checkpoint.a1b2c3d4.tmp"
    stale.write_bytes(b"half")
    monkeypatch.setattr(BrainToTextDecoder_Trainer, "_train_one", real)
    assert train_model.main([*argv, "resume=true"]) == 0
    assert not stale.exists() and f"Removed {stale}, left by an interrupted save" in (out / "training_log").read_text()
    assert sweep_stale_temp_files(out / "checkpoint") == [] and atomic_io._TEMP_NAME.match(stale.name)


def test_partial_results_rewrite_is_atomic(tmp_path, monkeypatch):
    """Issue 22 (also seen): _load rewrote the file in place; a kill there lost the saved trials."""
    from model_training import eval_results

    path = tmp_path / ".eval_partial_val_redis.jsonl"
    store = eval_results.PartialResults(path, {"a": 1})
    store.add({"id": "t1"})
    store.add({"id": "t2"})
    with open(path, "a") as fh:
        fh.write('{"id": "t3", "pre')  # torn by a kill
    before = path.read_text()
    calls = []

    def dumps(obj, *a, **kw):  # the process dies while the cleaned file is being written
        calls.append(obj)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_dumps(obj, *a, **kw)

    real_dumps = eval_results.json.dumps
    monkeypatch.setattr(eval_results.json, "dumps", dumps)
    with pytest.raises(KeyboardInterrupt):
        eval_results.PartialResults(path, {"a": 1})
    monkeypatch.undo()
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert sorted(eval_results.PartialResults(path, {"a": 1}).records) == ["t1", "t2"]


@pytest.mark.parametrize("case", ["folder", "folder_restart", "parent_is_a_file", "row_not_an_object", "binary"])
def test_partial_results_bad_path_or_rows_are_one_line_errors(tmp_path, case):
    """Reported: decode_realtime --out <a folder> gave IsADirectoryError; the same kind for every user of the
    shared PartialResults (evaluate_model too): a PartialResultsError (one line, exit 2), never a traceback."""
    from model_training import eval_results

    path = tmp_path / "out.jsonl"
    if case.startswith("folder"):
        path.mkdir()
    elif case == "parent_is_a_file":
        path.write_text("x")
        path = path / "sub" / "r.jsonl"
    elif case == "row_not_an_object":
        eval_results.PartialResults(path, {"a": 1})
        with open(path, "a") as fh:
            fh.write("[1, 2]\n{}\n")
    else:
        path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(eval_results.PartialResultsError) as err:
        eval_results.PartialResults(path, {"a": 1}, restart=case == "folder_restart", where_flag="--out")
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert {"folder": "is a folder", "folder_restart": "is a folder", "parent_is_a_file": "is a file, expected a folder",
            "row_not_an_object": "line 2: expected a JSON object", "binary": "unreadable"}[case] in str(err.value)
