"""Online recalibration beside the real-time decoder (model_training/recalibrate_online.py, issue 25 part 2)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading

import numpy as np
import pytest
import torch

from model_training import decode_realtime, recalibrate_online
from model_training.calibration import CONTROL_STREAM, Calibrator
from model_training.checkpoint import load_trained_model
from model_training.finished_sentences import sentence_fields
from model_training.realtime import Sentence as DecodedSentence
from model_training.streaming import StreamingModel
from nejm_b2txt_utils.redis_protocol import FINISHED_SENTENCE_STREAM
from nejm_b2txt_utils.redis_server import RedisServer
from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path, list_sessions

NEW = "t15.2025.05.01"  # after the tiny preset's last session: the model does not know it


@pytest.fixture(scope="module")
def new_session(tiny_data, tmp_path_factory):
    """An HDF5 root holding only NEW, a copy of the tiny preset's last session under a later date."""
    root = tmp_path_factory.mktemp("online") / "hdf5_data_final"
    src = tiny_data / "hdf5_data_final"
    shutil.copytree(src / list_sessions(src)[-1], root / NEW)
    return root


def new_trials(root, n):
    with T15File(data_file_path(root, NEW, "train"), patching=None) as f:
        return [f.read_trial(k) for k in list(f.keys)[:n]]


def recal_args(model, out, port, *extra):
    return ["--model_path", str(model), "--session", NEW, "--out", str(out), "--redis_ip", "127.0.0.1",
            "--redis_port", str(port), "--max_steps", "3", "--batch_size", "4", "--nice", "0",
            "--idle_timeout", "0.5", *extra]


def publish(r, features, text="", label="", confidence=0.9, session=NEW, text_kind="words"):
    s = DecodedSentence("s", text, "trial_end", 1, 0.0, label=label, features=features, day=2,
                        logits=np.zeros((0, 41), np.float32))
    return r.xadd(FINISHED_SENTENCE_STREAM, {**sentence_fields(s, session, text_kind), "confidence": str(confidence)})


def control_paths(r):
    return [fields[b"newModelPath"].decode() for _, fields in r.xrange(CONTROL_STREAM)]


def test_decoder_and_recalibrator_swap_models_only_between_sentences(trained_model, new_session, tmp_path,
                                                                     monkeypatch):
    pushes = []  # (model, day, bins already in the sentence) at every bin the decoder pushes
    real_push = StreamingModel.push

    def recording_push(self, values, where="bin"):
        pushes.append((self.model, self.day_idx, self.n_bins))
        return real_push(self, values, where)

    monkeypatch.setattr(StreamingModel, "push", recording_push)
    out, jsonl = tmp_path / "recal", tmp_path / "rt.jsonl"
    with RedisServer() as server:
        r = server.client()
        codes = {}
        recal = threading.Thread(target=lambda: codes.setdefault("recal", recalibrate_online.main(recal_args(
            trained_model, out, server.port, "--labels", "prompted", "--min_sentences", "2", "--idle_timeout", "3",
            "--keep", "0"))))
        recal.start()
        codes["decoder"] = decode_realtime.main([
            "--model_path", str(trained_model), "--data_dir", str(new_session), "--session", NEW, "--eval_type",
            "train", "--max_trials", "10", "--speed", "4", "--lm", "none", "--publish_sentences", "--redis_ip",
            "127.0.0.1", "--redis_port", str(server.port), "--out", str(jsonl), "--live", "off"])
        recal.join(60)
        published, entries = control_paths(r), r.xrange(FINISHED_SENTENCE_STREAM)
    assert codes == {"decoder": 0, "recal": 0}
    state = json.loads((out / "recalibration.json").read_text())
    assert len(entries) == 10 and state["sentences_read"] == 10 and state["used"] == 10
    assert [u["checkpoint"] for u in state["updates"]] == [f"recal_{i:04d}" for i in range(1, 10)]  # from the 2nd on
    assert published == [str((out / f"recal_{i:04d}").resolve()) for i in range(1, 10)]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("recal_")) == [f"recal_{i:04d}" for i in range(1, 10)]
    # every bin of a sentence went through one model: a model changes only where a sentence starts (0 bins)
    starts = [i for i, (_, _, n) in enumerate(pushes) if n == 0]
    assert len(starts) == 10
    changes = [i for i in range(1, len(pushes)) if pushes[i][0] is not pushes[i - 1][0]]
    assert changes and set(changes) <= set(starts)
    recs = [json.loads(x) for x in jsonl.read_text().splitlines()[1:]]
    paths = [rec["model_path"] for rec in recs]
    assert paths[0] == str(trained_model.resolve()) and paths[-1] in published
    assert len(set(paths)) == len(changes) + 1  # each model decoded whole sentences, in publishing order
    assert [p for p in dict.fromkeys(paths) if p in published] == sorted(p for p in set(paths) if p in published)
    # the start model decodes NEW on the nearest earlier day (2); a recalibrated one on NEW's own day (3)
    assert [rec["day"] for rec in recs] == [2 if p == paths[0] else 3 for p in paths]
    for name in ("recal_0001", "recal_0009"):
        model, margs = load_trained_model(out / name)
        assert list(margs.dataset.sessions)[-1] == NEW and len(model.day_weights) == 4


def test_decoded_labels_skip_empty_oov_and_unsure_sentences_with_counts(trained_model, new_session, tmp_path,
                                                                        capsys):
    feats = [np.ascontiguousarray(t.input_features, dtype=np.float32) for t in new_trials(new_session, 3)]
    out = tmp_path / "recal"
    with RedisServer() as server:
        r = server.client()
        publish(r, feats[0], text="")  # empty
        publish(r, feats[0], text="have you ever zzqxvbn")  # a word outside the CMU dictionary
        publish(r, feats[0], text="have you ever sung", confidence=0.2)  # below the gate
        publish(r, feats[1], text="have you ever sung")
        publish(r, feats[1], text="HH AE V", text_kind="phonemes")  # a decoder without an LM
        publish(r, feats[2], text="that's so easy", session="t15.2025.04.13")  # another session
        r.xadd(FINISHED_SENTENCE_STREAM, {"features": b"\x00" * 12, "shape": "2,512", "day": "3"})  # malformed
        publish(r, feats[2], text="that's so easy")
        code = recalibrate_online.main(recal_args(trained_model, out, server.port, "--labels", "decoded",
                                                  "--min_sentences", "2", "--min_confidence", "0.5"))
        published = control_paths(r)
    assert code == 0
    state = json.loads((out / "recalibration.json").read_text())
    assert {k: state[k] for k in state if k.startswith("skipped_") or k == "used"} == {
        "used": 2, "skipped_empty": 1, "skipped_oov": 1, "skipped_low_confidence": 1, "skipped_no_label": 0,
        "skipped_phoneme_text": 1, "skipped_other_session": 1, "skipped_bad_entry": 1,
        "skipped_too_short": 0}
    assert state["sentences_read"] == 8 and [u["sentences"] for u in state["updates"]] == [2]
    assert published == [str((out / "recal_0001").resolve())]
    assert "expected float32 [2, 512] = 4096" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["update", "save", "publish"])
def test_a_recalibrator_killed_mid_update_keeps_the_published_checkpoint(trained_model, new_session, tmp_path,
                                                                         monkeypatch, capsys, where):
    trials = new_trials(new_session, 3)
    out = tmp_path / "recal"
    with RedisServer() as server:
        r = server.client()
        for t in trials:
            publish(r, np.ascontiguousarray(t.input_features, dtype=np.float32), label=t.sentence_label)
        args = recal_args(trained_model, out, server.port, "--labels", "prompted", "--min_sentences", "2")
        real_update, real_save, calls = Calibrator.update, torch.save, []

        def killed_update(self, sentences):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real_update(self, sentences)

        def killed_save(obj, fh, *a, **k):  # the 2nd checkpoint half-written, then killed
            calls.append(1)
            real_save(obj, fh, *a, **k)
            if len(calls) == 2:
                fh.truncate(100)
                raise KeyboardInterrupt

        def killed_publish(client, path):  # the 2nd checkpoint written and recorded, killed before its XADD
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real_publish(client, path)

        real_publish = recalibrate_online.publish_model_path
        with monkeypatch.context() as m:
            m.setattr(*{"update": (Calibrator, "update", killed_update), "save": (torch, "save", killed_save),
                        "publish": (recalibrate_online, "publish_model_path", killed_publish)}[where])
            assert recalibrate_online.main(args) == 130
        assert capsys.readouterr().err == "interrupted (Ctrl-C); nothing half-written was kept\n"
        first = out / "recal_0001" / "checkpoint" / "best_checkpoint"
        kept = first.read_bytes()
        written = ["recal_0001", "recal_0002"] if where == "publish" else ["recal_0001"]
        assert sorted(p.name for p in out.iterdir()) == [*written, "recalibration.json"]  # nothing half-written
        assert control_paths(r) == [str((out / "recal_0001").resolve())]  # the decoder still uses recal_0001
        assert len(load_trained_model(out / "recal_0001")[0].day_weights) == 4
        state = json.loads((out / "recalibration.json").read_text())
        assert state["checkpoint"] == written[-1] and state["sentences_read"] == len(written) + 1
        assert recalibrate_online.main(args) == 0  # resumed: the 3rd entry updated again, or recal_0002 announced
        assert control_paths(r) == [str((out / f"recal_{i:04d}").resolve()) for i in (1, 2)]
    state = json.loads((out / "recalibration.json").read_text())
    assert [u["sentences"] for u in state["updates"]] == [2, 3] and state["used"] == 3
    assert first.read_bytes() == kept
    assert len(load_trained_model(out / "recal_0002")[0].day_weights) == 4  # no second day added on resume


def test_entries_the_model_cannot_train_on_are_skipped_with_one_line_each(trained_model, new_session, tmp_path,
                                                                         capsys):
    """Reported: shape=100,3 with a label was accepted and every update (and every rerun) crashed in _step.
    Same kind: NaN confidence passed the decoded gate, no bins, fewer bins than one patch, absurd/NaN/Inf
    features, too few frames for the label's CTC alignment."""
    trials = new_trials(new_session, 3)
    feats = [np.ascontiguousarray(t.input_features, dtype=np.float32) for t in trials]
    out = tmp_path / "recal"
    with RedisServer() as server:
        r = server.client()
        bad = [publish(r, np.ones((100, 3), np.float32), label=trials[0].sentence_label),  # 3 channels, not 512
               publish(r, feats[0][:0], label=trials[0].sentence_label),  # shape 0,512: no bins
               publish(r, feats[0][:3], label=trials[0].sentence_label),  # 3 bins < one 14-bin patch
               publish(r, np.full_like(feats[0], 1e30), label=trials[0].sentence_label),  # absurd magnitude
               publish(r, feats[0], label=trials[0].sentence_label, confidence="nan")]  # NaN confidence
        publish(r, feats[0][:18], label=trials[0].sentence_label)  # 2 frames: CTC cannot align the label
        for t, f in zip(trials, feats):
            publish(r, f, label=t.sentence_label)
        code = recalibrate_online.main(recal_args(trained_model, out, server.port, "--labels", "prompted",
                                                  "--min_sentences", "2"))
    assert code == 0
    state = json.loads((out / "recalibration.json").read_text())
    assert (state["used"], state["skipped_bad_entry"], state["skipped_too_short"]) == (3, 5, 1)
    assert state["sentences_read"] == 9 and [u["sentences"] for u in state["updates"]] == [2, 3]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 5 and all(b.decode() in e for b, e in zip(bad, errors))
    assert "shape 100,3: expected 512 channels" in errors[0] and "no bins" in errors[1]
    assert "3 bins give no output frame, expected at least 14" in errors[2]
    assert "magnitude 1e+30, expected at most 1e+06" in errors[3]
    assert "confidence nan, expected a number in [0, 1]" in errors[4]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "recal_0002").stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


@pytest.mark.parametrize("where", ["update", "label"])
def test_an_entry_that_makes_the_update_or_labelling_raise_is_skipped_and_a_rerun_goes_on(
        trained_model, new_session, tmp_path, monkeypatch, capsys, where):
    """The last line of defence: an entry that slips past the checks and makes the update (or its labelling) raise
    is counted and recorded, the state advanced, the loop goes on; a rerun does not crash on it again."""
    trials = new_trials(new_session, 4)
    out = tmp_path / "recal"
    real_update, real_ids = Calibrator.update, recalibrate_online.sentence_to_model_ids
    poison = trials[2].sentence_label

    def crashing_update(self, sentences):
        sentences = list(sentences)
        if len(sentences) == 3:  # the 3rd entry poisons the pool
            raise RuntimeError("The size of tensor a (512) must match the size of tensor b (3)")
        return real_update(self, sentences)

    def crashing_ids(text, lexicon):
        if text == poison:
            raise KeyError("x")
        return real_ids(text, lexicon)

    with RedisServer() as server:
        r = server.client()
        ids = [publish(r, np.ascontiguousarray(t.input_features, dtype=np.float32), label=t.sentence_label)
               for t in trials[:3]]
        args = recal_args(trained_model, out, server.port, "--labels", "prompted", "--min_sentences", "2")
        with monkeypatch.context() as m:
            if where == "update":
                m.setattr(Calibrator, "update", crashing_update)
            else:
                m.setattr(recalibrate_online, "sentence_to_model_ids", crashing_ids)
            assert recalibrate_online.main(args) == 0
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        why = {"update": "the update failed (The size of tensor a (512) must match the size of tensor b (3))",
               "label": "could not be read (KeyError: 'x')"}[where]
        assert err == [f"error: {FINISHED_SENTENCE_STREAM} entry {ids[2].decode()}: {why}; sentence skipped"]
        state = json.loads((out / "recalibration.json").read_text())
        assert (state["last_id"], state["used"], state["skipped_bad_entry"]) == (ids[2].decode(), 2, 1)
        assert state["bad_entries"] == [ids[2].decode()] and [u["sentences"] for u in state["updates"]] == [2]
        publish(r, np.ascontiguousarray(trials[3].input_features, dtype=np.float32), label=trials[3].sentence_label)
        assert recalibrate_online.main(args) == 0  # the rebuilt pool leaves the failed entry out
    state = json.loads((out / "recalibration.json").read_text())
    assert state["used"] == 3 and [u["sentences"] for u in state["updates"]] == [2, 3]


@pytest.mark.parametrize("case", ["out_is_a_file", "out_under_a_file", "state_is_a_list", "state_is_a_folder",
                                  "state_field_type"])
def test_recalibrator_bad_out_or_state_is_one_line_exit_2(trained_model, tmp_path, capsys, case):
    """Reported: --out an existing file (FileExistsError), recalibration.json [1,2] (TypeError) or a folder
    (IsADirectoryError) gave tracebacks."""
    out = tmp_path / "recal"
    if case == "out_is_a_file":
        out.write_text("x")
    elif case == "out_under_a_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "recal"
    else:
        out.mkdir()
        state = out / "recalibration.json"
        if case == "state_is_a_folder":
            state.mkdir()
        else:
            state.write_text({"state_is_a_list": "[1,2]", "state_field_type": '{"updates": 3}'}[case])
    with RedisServer() as server:
        assert recalibrate_online.main(recal_args(trained_model, out, server.port)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert {"out_is_a_file": "is a file, not a folder", "out_under_a_file": "is a file, not a folder",
            "state_is_a_list": "expected a JSON object",
            "state_is_a_folder": "unreadable state", "state_field_type": "field 'updates' is 3"}[case] in err[0]
    assert (out.read_text() == "x") if case == "out_is_a_file" else True


def test_recalibrator_bad_input_is_one_line(trained_model, tmp_path, capsys):
    assert recalibrate_online.main(["--model_path", str(trained_model), "--session", NEW, "--out",
                                    str(tmp_path), "--min_confidence", "2", "--nice", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --min_confidence: expected a value in [0, 1], "
                                                           "got 2.0"]
    assert recalibrate_online.main(["--model_path", str(tmp_path / "none"), "--session", NEW, "--out",
                                    str(tmp_path / "o"), "--redis_port", "1", "--nice", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_swapped_in_model_with_one_more_day_decodes_that_day(trained_model, new_session, tmp_path, capsys):
    from model_training.calibration import CalibrationSettings
    from model_training.inference import infer_trial
    from model_training.realtime import Bin, GreedyText, RealtimeDecoder, SentenceEnd

    model, margs = load_trained_model(trained_model)
    Calibrator(load_trained_model(trained_model)[0], margs, NEW, CalibrationSettings()).save(tmp_path / "recal")
    feats = new_trials(new_session, 1)[0].input_features

    def sentence(sid):  # bins on day 3, which only the recalibrated model has
        return [*(Bin(row, 3, sid, 0.0) for row in feats), SentenceEnd(sid)]

    decoder = RealtimeDecoder(StreamingModel(model, "cpu", margs.dataset.data_transforms, "causal"), GreedyText(),
                              n_days=3, model_loader=load_trained_model)
    assert list(decoder.run(sentence("a"))) == [] and decoder.bad_bins == len(feats)  # rejected by the old model
    assert "day 3 is not a day-layer index 0..2; bin skipped" in capsys.readouterr().err
    decoder.load_model(str(tmp_path / "recal"))
    (s,) = decoder.run(sentence("b"))
    recal, _ = load_trained_model(tmp_path / "recal")
    offline = infer_trial(recal, feats, 3, "cpu", margs.dataset.data_transforms, smoothing="causal")
    assert decoder.n_days == 4 and s.day == 3 and s.model_path == str(tmp_path / "recal")
    assert s.features.shape == feats.shape and np.abs(s.logits - offline).max() < 1e-4


def test_only_the_keep_newest_checkpoints_stay_on_disk(tmp_path):
    from types import SimpleNamespace

    for i in range(1, 6):
        (tmp_path / f"recal_{i:04d}").mkdir()
    (tmp_path / "recalibration.json").write_text("{}")
    recalibrate_online.OnlineRecalibrator.prune(SimpleNamespace(args=SimpleNamespace(keep=2), out=tmp_path), 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recal_0004", "recal_0005", "recalibration.json"]
    assert recalibrate_online.next_checkpoint_name(tmp_path) == "recal_0006"


def test_published_sentence_holds_the_accepted_bins_label_confidence_and_model(trained_model, new_session, tmp_path):
    from model_training.bin_sources import write_bin, write_sentence_end
    from model_training.calibration import greedy_confidence
    from model_training.finished_sentences import parse_entry
    from model_training.inference import infer_trial

    feats = np.ascontiguousarray(new_trials(new_session, 1)[0].input_features, dtype=np.float32)
    with RedisServer() as server:
        r = server.client()
        for i, row in enumerate(feats):
            if i == 7:
                write_bin(r, np.full_like(row, np.nan), "s1", 2)  # not accepted: one error line, not published
            write_bin(r, row, "s1", 2, label="Have you ever sung?" if i == 0 else None)
        write_sentence_end(r, "s1")
        assert decode_realtime.main(["--model_path", str(trained_model), "--source", "redis", "--from_start",
                                     "--idle_timeout", "0.5", "--lm", "none", "--no_endpoint", "--publish_sentences",
                                     "--redis_port", str(server.port), "--out", str(tmp_path / "rt.jsonl")]) == 0
        ((entry_id, fields),) = r.xrange(FINISHED_SENTENCE_STREAM)
    fs = parse_entry(entry_id, fields)
    model, margs = load_trained_model(trained_model)
    offline = infer_trial(model, feats, 2, "cpu", margs.dataset.data_transforms, smoothing="causal")
    assert np.array_equal(fs.features, feats) and fs.label == "Have you ever sung?" and fs.day == 2
    assert fs.session == "t15.2025.04.13" and fs.sentence == "s1" and fs.model_path == str(trained_model.resolve())
    assert fs.text_kind == "phonemes"  # --lm none
    assert abs(fs.confidence - greedy_confidence(offline)) < 1e-4 and 0 < fs.confidence <= 1


def test_rolling_zscore_normalises_each_sentence_by_the_ones_before_it(trained_model, new_session, tmp_path,
                                                                      monkeypatch):
    from model_training.calibration import UpdateResult
    from nejm_b2txt_utils.causal_features import RollingZScore

    trials = new_trials(new_session, 3)
    seen = []
    monkeypatch.setattr(Calibrator, "update", lambda self, sentences: seen.append([s.features for s in sentences])
                        or UpdateResult(1, 0.5, 0.0, False))
    with RedisServer() as server:
        r = server.client()
        for t in trials:
            publish(r, np.ascontiguousarray(t.input_features, dtype=np.float32), label=t.sentence_label)
        assert recalibrate_online.main(recal_args(trained_model, tmp_path / "recal", server.port, "--min_sentences",
                                                  "3", "--rolling_zscore", "1")) == 0
    ref = RollingZScore(1)
    want = []
    for t in trials:
        want.append(ref.normalise(t.input_features))
        ref.add_sentence(t.input_features)
    assert len(seen) == 1 and all(np.allclose(a, b, atol=1e-5) for a, b in zip(seen[0], want, strict=True))
    assert np.array_equal(seen[0][0], trials[0].input_features)  # nothing before the first: passed through
    assert not np.allclose(seen[0][2], trials[2].input_features)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_background_recalibrator_stops_on_sigterm_and_sigint(trained_model, tmp_path, sig):
    """Started as a shell's background job (SIGINT ignored at start), SIGINT did nothing and a benchmark waited
    60 s for it, then crashed; now both signals end it with the Ctrl-C line and exit 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = __import__("pathlib").Path(__file__).resolve().parents[2]
    with RedisServer() as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "model_training.recalibrate_online",
             *recal_args(trained_model, tmp_path / "out", server.port)[:-2]],  # no --idle_timeout: runs until told
            cwd=repo, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(repo)},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        r = server.client()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(  # started: its Redis connection is there
                c.get("cmd", "") in ("xread", "xrange", "xrevrange") for c in r.client_list()):
            time.sleep(0.2)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
    assert proc.returncode == 130, err[-500:]
    assert "interrupted" in err.strip().splitlines()[-1] and "Traceback" not in err
