"""Real-time decoding: streamed frames equal the offline path, end of speech, Redis restarts, malformed bins."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

from model_training import decode_realtime
from model_training.bin_sources import replay_hdf5, write_bin, write_sentence_end
from model_training.checkpoint import load_trained_model
from model_training.inference import infer_trial
from model_training.realtime import CONTROL_STREAM, GreedyText, RealtimeDecoder, StreamingLM
from model_training.realtime_stats import summarise, word_flicker
from model_training.streaming import StreamingModel
from nejm_b2txt_utils import redis_protocol as rp
from nejm_b2txt_utils.augmentation import gauss_smooth
from nejm_b2txt_utils.causal_features import RollingZScore, StreamingSmoother, causal_smooth
from nejm_b2txt_utils.endpoint import EndpointRule
from nejm_b2txt_utils.metrics import ctc_greedy_decode
from nejm_b2txt_utils.phonemes import SIL_ID_MODEL, model_ids_to_phonemes
from nejm_b2txt_utils.redis_server import RedisServer
from nejm_b2txt_utils.t15_hdf5 import n_output_frames


def val_trials(data_root, sessions):
    from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path

    out = []
    for day, s in enumerate(sessions):
        path = data_file_path(data_root / "hdf5_data_final", s, "val")
        if path.is_file():
            with T15File(path, patching=None) as f:
                out += [(day, f.read_trial(k)) for k in f.keys]
    return out


def stream_trial(stream: StreamingModel, features: np.ndarray, day: int) -> np.ndarray:
    stream.reset(day)
    frames = [f.logits for row in features if (f := stream.push(row)) is not None]
    return np.stack(frames) if frames else np.zeros((0, 41), np.float32)


def test_smoothers_match_their_offline_counterparts():
    x = np.random.default_rng(0).standard_normal((1, 40, 6)).astype(np.float32)
    xt = torch.from_numpy(x)
    for mode, offline in (("causal", causal_smooth(xt)), ("centred", gauss_smooth(xt, padding="valid"))):
        sm = StreamingSmoother(mode)
        out = [y for row in x[0] if (y := sm.push(row)) is not None]
        assert np.abs(np.stack(out) - offline.numpy()[0]).max() < 1e-6
        assert len(out) == (40 if mode == "causal" else 32)
    # the centred taps [.02763 .06628 .12383 .18017 .20416] cut at the centre, renormalised
    assert np.allclose(StreamingSmoother("causal").kernel, [0.0459, 0.1101, 0.2057, 0.2993, 0.3391], atol=1e-4)


def test_check_bin_refuses_implausible_magnitudes_like_nan():
    """1e30 features (a corrupt entry) overflow float32 squares downstream: refused beyond MAX_ABS_FEATURE."""
    from nejm_b2txt_utils.causal_features import MAX_ABS_FEATURE, BadBinError, check_bin

    ok = np.full(4, MAX_ABS_FEATURE, np.float32)
    assert check_bin(ok, 4).tolist() == [1e6] * 4
    for bad, why in ((1e30, "magnitude 1e+30, expected at most 1e+06"), (-2e6, "magnitude 2e+06"),
                     (np.inf, "1 NaN/Inf features")):
        with pytest.raises(BadBinError, match=why.replace("+", r"\+")):
            check_bin([0.0, bad, 1.0, 2.0], 4, "entry 1-0")


def test_rolling_zscore_uses_only_finished_sentences():
    z = RollingZScore(2)
    a, b, c = (np.full((5, 3), v, np.float32) + np.arange(5)[:, None] for v in (0.0, 10.0, 100.0))
    assert np.array_equal(z.push(a[0]), a[0])  # nothing finished yet: pass through
    z = RollingZScore(2)
    for s in (a, b, c):
        z.add_sentence(s)
    both = np.concatenate([b, c])  # the last 2 sentences only
    assert np.allclose(z.mean, both.mean(0)) and np.allclose(z.std, both.std(0))
    assert np.allclose(z.normalise(c), (c - both.mean(0)) / both.std(0), atol=1e-5)


@pytest.mark.parametrize("smoothing", ["causal", "centred"])
def test_streamed_logits_equal_offline(trained_model, tiny_data, smoothing):
    model, margs = load_trained_model(trained_model)
    transforms = margs.dataset.data_transforms
    stream = StreamingModel(model, "cpu", transforms, smoothing)
    worst = 0.0
    for day, t in val_trials(tiny_data, list(margs.dataset.sessions))[:4]:
        offline = infer_trial(model, t.input_features, day, "cpu", transforms, smoothing=smoothing)
        streamed = stream_trial(stream, t.input_features, day)
        lost = 8 if smoothing == "centred" else 0
        assert len(streamed) == len(offline) == n_output_frames(len(t.input_features) - lost)
        worst = max(worst, float(np.abs(streamed - offline).max()))
    assert worst < 1e-4, f"max |diff| streamed vs offline = {worst:.2e}"


def test_triple_gru_decoder_streams_its_inference_path():
    from model_training_nnn.rnn_model import TripleGRUDecoder

    torch.manual_seed(0)
    model = TripleGRUDecoder(neural_dim=16, n_units=24, n_days=2, n_classes=41, patch_size=14, patch_stride=4).eval()
    x = np.random.default_rng(1).standard_normal((61, 16)).astype(np.float32)
    transforms = {"smooth_data": True, "smooth_kernel_std": 2, "smooth_kernel_size": 100}
    offline = infer_trial(model, x, 1, "cpu", transforms, smoothing="causal")
    streamed = stream_trial(StreamingModel(model, "cpu", transforms, "causal", n_channels=16), x, 1)
    assert streamed.shape == offline.shape == (12, 41)
    assert np.abs(streamed - offline).max() < 1e-4


def frame(best: int, p_best: float) -> np.ndarray:
    """Model-order logits whose softmax puts ``p_best`` on ``best`` and the rest evenly on the others."""
    p = np.full(41, (1 - p_best) / 40)
    p[best] = p_best
    return np.log(p)


def test_end_of_speech_rule_on_made_up_logits():
    rule = EndpointRule(trailing_ms=240, silence_prob=0.9)  # 3 frames of 80 ms
    assert rule.trailing_frames == 3
    blank, sil, phone = frame(0, 0.97), frame(SIL_ID_MODEL, 0.97), frame(5, 0.8)
    # leading silence never ends speech that has not started
    assert not any(rule.update(blank) for _ in range(10))
    # speech, then a silence tail: ends on exactly the 3rd silent frame
    assert [rule.update(f) for f in (phone, phone, blank, sil)] == [False] * 4
    assert rule.update(blank) is True and rule.ended
    # no tail: speech up to the end never fires
    rule.reset()
    assert not any(rule.update(f) for f in [blank, phone, blank, blank, phone, phone])
    # noise: blank best but P(BLANK)+P(SIL) = 0.6 < 0.9 breaks the tail every time
    rule.reset()
    noisy = frame(0, 0.6)
    seq = [phone, blank, blank, noisy, blank, blank, noisy, blank]
    assert not any(rule.update(f) for f in seq) and rule.silent_run == 1
    assert [rule.update(blank) for _ in range(2)] == [False, True]
    with pytest.raises(ValueError, match="41"):
        rule.update(np.zeros(40))


def test_word_flicker_counts_changed_words():
    assert word_flicker(["the", "the cat", "a cat sat"], "a cat sat") == (1, 6)
    assert word_flicker(["x y z"], "x") == (2, 3)


class FakeLM:
    """The LM protocol on a real Redis; survives a restart of the server; answers 'i heard N frames' where N
    counts the frames since the last reset."""

    def __init__(self, port: int):
        import redis

        self.r = redis.Redis(port=port, socket_timeout=1.0)
        self.stop = threading.Event()
        self.frames = 0
        self.start_ms = rp.redis_time_ms(self.r)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        import redis

        last = {s: self.start_ms for s in (rp.RESET_STREAM, rp.INPUT_STREAM, rp.FINALIZE_STREAM)}
        while not self.stop.is_set():
            try:
                resp = self.r.xread(last, count=1, block=20) or []
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)
                continue
            for stream, entries in resp:
                stream = stream.decode()
                entry_id, fields = entries[0]
                last[stream] = entry_id
                cid = fields.get(b"client_id", b"")
                if stream == rp.RESET_STREAM:
                    self.frames = 0
                    self.r.xadd(rp.DONE_RESETTING_STREAM, {"done": 1, "client_id": cid})
                elif stream == rp.INPUT_STREAM:
                    self.frames += len(rp.decode_logits(fields[b"logits"]))
                    self.r.xadd(rp.PARTIAL_OUTPUT_STREAM, {"lm_response_partial": f"w{self.frames}",
                                                           "client_id": cid})
                else:
                    scoring = rp.format_scoring([rp.Candidate(f"i heard {self.frames} frames", -1, -2, 0, -2.3)])
                    self.r.xadd(rp.FINAL_OUTPUT_STREAM, {"scoring": scoring, "client_id": cid})

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.mark.slow
def test_redis_restart_mid_sentence_loses_no_sentence(trained_model, tiny_data, tmp_path):
    import redis

    model, margs = load_trained_model(trained_model)
    sessions = list(margs.dataset.sessions)
    trials = val_trials(tiny_data, sessions)[:3]
    expected = [len(infer_trial(model, t.input_features, d, "cpu", margs.dataset.data_transforms, "causal"))
                for d, t in trials]
    servers = [RedisServer().start()]
    port = servers[0].port
    lm = FakeLM(port)
    finished = []

    def source():  # restart redis-server 10 bins into the second sentence, after the first is final
        for i, ev in enumerate(replay_hdf5(tiny_data / "hdf5_data_final", sessions, "val", 0, 3)):
            yield ev
            if i == len(trials[0][1].input_features) + 1 + 10:
                assert len(finished) == 1
                servers[0].stop()
                time.sleep(0.2)
                servers.append(RedisServer(port=port).start())  # a fresh, empty server on the same port

    try:
        client = rp.RemoteLMClient(redis.Redis(port=port, socket_timeout=2.0), timeout_s=3.0)
        decoder = RealtimeDecoder(StreamingModel(model, "cpu", margs.dataset.data_transforms, "causal"),
                                  StreamingLM(client, retries=5))
        decoder.on_sentence_end.append(finished.append)
        texts = [s.text for s in decoder.run(source())]
    finally:
        lm.close()
        for server in servers:
            server.stop()
    assert len(servers) == 2
    assert texts == [f"i heard {n} frames" for n in expected]  # the second sentence rebuilt with all its frames
    assert [s.sentence for s in finished] == [f"{t.session}/{t.block_num}/{t.trial_num}" for _, t in trials]


def test_decoder_greedy_equals_offline_and_malformed_bins_are_error_lines(trained_model, tiny_data, tmp_path,
                                                                           capsys):
    model, margs = load_trained_model(trained_model)
    day, t = val_trials(tiny_data, list(margs.dataset.sessions))[0]
    offline = infer_trial(model, t.input_features, day, "cpu", margs.dataset.data_transforms, "causal")
    greedy = " ".join(model_ids_to_phonemes(ctc_greedy_decode(offline)))
    with RedisServer() as server:
        r = server.client()
        for i, row in enumerate(t.input_features):
            if i == 5:
                write_bin(r, row[:-1], "s1", day)  # wrong width
            if i == 9:
                bad = row.copy()
                bad[3] = np.nan
                write_bin(r, bad, "s1", day)
            write_bin(r, row, "s1", day)
        r.xadd("realtime_neural_bins", {"features": b"\x00" * 7, "sentence": "s1"})  # not float32 bytes
        write_sentence_end(r, "s1")
        out = tmp_path / "rt.jsonl"
        code = decode_realtime.main(["--model_path", str(trained_model), "--source", "redis", "--from_start",
                                     "--idle_timeout", "0.5", "--lm", "none", "--no_endpoint", "--redis_port",
                                     str(server.port), "--out", str(out), "--summary_json", str(tmp_path / "s.json")])
    assert code == 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    width = t.input_features.shape[1]
    assert f"expected {width} float32 features, got {width - 1}; bin skipped" in errors[0] and "NaN/Inf" in errors[1]
    assert errors[2].endswith("expected 512 float32 features, got 2; bin skipped")
    recs = [json.loads(x) for x in out.read_text().splitlines()[1:]]
    assert [r["text"] for r in recs] == [greedy] and recs[0]["n_frames"] == len(offline)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == len(offline) and summary["frame_model_ms"]["n"] == len(offline)


def test_rejected_bins_never_open_or_label_a_sentence_and_mid_sentence_days_must_match(trained_model, tiny_data,
                                                                                      tmp_path, capsys):
    """Reported: a 12-byte bin with day=5, label='wrong' opened the sentence and set its day and label; the good
    bins were decoded on that day. Same kind: the end marker's label was ignored, mid-sentence bins of another
    or a non-int day were accepted, a bin with no sentence id closed the sentence (sentence "0")."""
    model, margs = load_trained_model(trained_model)
    day, t = val_trials(tiny_data, list(margs.dataset.sessions))[0]
    other = (day + 1) % len(margs.dataset.sessions)  # a valid day-layer index, not the sentence's
    offline = infer_trial(model, t.input_features, day, "cpu", margs.dataset.data_transforms, "causal")
    greedy = " ".join(model_ids_to_phonemes(ctc_greedy_decode(offline)))
    stream = "realtime_neural_bins"
    row0 = t.input_features[0].astype(np.float32).tobytes()
    with RedisServer() as server:
        r = server.client()
        r.xadd(stream, {"features": row0, "day": day})  # no sentence id, none open
        r.xadd(stream, {"features": b"\x00" * 12, "day": other, "sentence": "s1", "label": "wrong"})  # rejected
        for i, row in enumerate(t.input_features):
            if i == 6:
                for bad_day in ("xyz", 99, -1, other):  # right width, wrong day
                    r.xadd(stream, {"features": row.astype(np.float32).tobytes(), "day": bad_day, "sentence": "s1"})
            if i == 7:  # no sentence id: a bin of the open sentence
                r.xadd(stream, {"features": row.astype(np.float32).tobytes(), "day": day})
            else:
                write_bin(r, row, "s1", day, label="first label" if i == 0 else None)
        write_sentence_end(r, "s1", label="the end label")
        out = tmp_path / "rt.jsonl"
        code = decode_realtime.main(["--model_path", str(trained_model), "--source", "redis", "--from_start",
                                     "--idle_timeout", "0.5", "--lm", "none", "--no_endpoint", "--redis_port",
                                     str(server.port), "--out", str(out)])
    assert code == 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 6
    assert errors[0].endswith("no sentence id and no sentence open; bin skipped")
    assert errors[1].endswith("expected 512 float32 features, got 3; bin skipped")
    assert errors[2].endswith("day 'xyz': expected an int day-layer index; bin skipped")
    assert [e.split(": ", 2)[2] for e in errors[3:]] == [
        f"day {d} differs from sentence 's1''s day {day}; bin skipped" for d in (99, -1, other)]
    recs = [json.loads(x) for x in out.read_text().splitlines()[1:]]
    assert [(r["sentence"], r["day"], r["label"], r["text"]) for r in recs] == [("s1", day, "the end label", greedy)]
    assert recs[0]["n_frames"] == len(offline)


def test_replay_entry_point_resumes_and_swaps_models_between_sentences(trained_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "replay.jsonl"
    base = ["--model_path", str(trained_model), "--data_dir", str(tiny_data / "hdf5_data_final"), "--speed", "0",
            "--lm", "none", "--out", str(out)]
    assert decode_realtime.main([*base, "--max_trials", "2"]) == 0
    assert decode_realtime.main([*base, "--max_trials", "3"]) == 0  # the first two are not decoded again
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) == 3
    assert decode_realtime.main([*base, "--speed", "-1"]) == 2
    capsys.readouterr()
    assert decode_realtime.main([*base[:-1], str(tmp_path)]) == 2  # --out a folder: was IsADirectoryError
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path}: is a folder (or not a regular file), expected the JSONL file of results; use another --out")
    assert decode_realtime.main([*base, "--summary_json", str(tmp_path)]) == 2  # checked before decoding
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --summary_json {tmp_path}: is a folder; expected a file path")

    model, margs = load_trained_model(trained_model)
    other, _ = load_trained_model(trained_model)
    with torch.no_grad():
        other.out.bias += 100.0 * torch.nn.functional.one_hot(torch.tensor(7), 41).float()  # phoneme 7 everywhere
    stream = StreamingModel(model, "cpu", margs.dataset.data_transforms, "causal")
    with RedisServer() as server:
        r = server.client()
        loaded = []

        def loader(path):
            loaded.append(path)
            if path == "bad":
                raise FileNotFoundError("bad: checkpoint file not found")
            return other
        decoder = RealtimeDecoder(stream, GreedyText(), control=r, model_loader=loader)
        seen = []

        def swap(sentence):  # what issue 25's recalibration does after a sentence: announce a new model
            seen.append(stream.model is other)
            r.xadd(CONTROL_STREAM, {"newModelPath": "bad" if len(seen) == 1 else "/models/v2"})
        decoder.on_sentence_end.append(swap)
        events = replay_hdf5(tiny_data / "hdf5_data_final", list(margs.dataset.sessions), "val", 0, 3)
        sentences = list(decoder.run(events))
    assert loaded == ["bad", "/models/v2"] and seen == [False, False, True]  # a bad path keeps the model
    assert "error: newModelPath 'bad'" in capsys.readouterr().err
    assert set(ctc_greedy_decode(sentences[2].logits)) == {7} != set(ctc_greedy_decode(sentences[1].logits))
    assert summarise(sentences)["sentences"] == 3


def test_bins_from_a_redis_that_is_not_there_is_one_line(trained_model, tmp_path, capsys):
    """New-user case: --source redis with no redis-server ended in redis-py's ConnectionError traceback."""
    import socket

    with socket.socket() as s:  # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert decode_realtime.main(["--model_path", str(trained_model), "--source", "redis", "--redis_ip", "127.0.0.1",
                                 "--redis_port", str(port), "--lm", "none", "--idle_timeout", "1",
                                 "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: Redis: ") and "is redis-server running" in err[-1]
    assert not any(line.startswith("Traceback") for line in err)


def test_replay_goes_on_after_a_nan_bin_and_a_trial_of_the_wrong_width(trained_model, tiny_data, tmp_path, capsys):
    """A replayed file with one NaN bin (trial 0) and one 511-wide trial (trial 1): one error line each, the NaN
    bin alone skipped, the wide trial skipped, every other trial decoded (the whole replay used to stop)."""
    import shutil

    import h5py

    from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path

    _, margs = load_trained_model(trained_model)
    sessions = list(margs.dataset.sessions)
    root = tmp_path / "hdf5_data_final"
    shutil.copytree(tiny_data / "hdf5_data_final", root)
    path = next(data_file_path(root, s, "val") for s in sessions if data_file_path(root, s, "val").is_file())
    with T15File(path, patching=None) as f:
        keys = list(f.keys)
        t0, t1 = f.read_trial(keys[0]), f.read_trial(keys[1])
        n_trials = sum(len(T15File(data_file_path(root, s, "val"), patching=None).keys)
                       for s in sessions if data_file_path(root, s, "val").is_file())
    with h5py.File(path, "r+") as h:
        x = h[keys[0]]["input_features"][...]
        x[7, 3] = np.nan
        h[keys[0]]["input_features"][...] = x
        del h[keys[1]]["input_features"]
        h[keys[1]]["input_features"] = t1.input_features[:, :511]
    out = tmp_path / "replay.jsonl"
    code = decode_realtime.main(["--model_path", str(trained_model), "--data_dir", str(root), "--speed", "0",
                                 "--lm", "none", "--no_endpoint", "--out", str(out)])
    assert code == 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, errors
    assert f"{keys[0]} bin 7" in errors[0] and "NaN/Inf" in errors[0] and errors[0].endswith("bin skipped")
    assert keys[1] in errors[1] and "expected 512 channels, got 511; trial skipped" in errors[1]
    recs = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()[1:]}
    assert len(recs) == n_trials - 1
    sid0 = f"{t0.session}/{t0.block_num}/{t0.trial_num}"
    assert recs[sid0]["n_frames"] == n_output_frames(len(t0.input_features) - 1)  # one bin fewer
    assert f"{t1.session}/{t1.block_num}/{t1.trial_num}" not in recs
