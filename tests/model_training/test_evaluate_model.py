"""evaluate_model.py: greedy mode, the Redis protocol against a real redis-server and a fake LM, resume."""

import csv
import hashlib
import json
import pickle
import threading
import time

import numpy as np
import pytest

from model_training import evaluate_model
from model_training.checkpoint import load_trained_model
from model_training.inference import infer_trial
from nejm_b2txt_utils import redis_protocol as rp
from nejm_b2txt_utils.metrics import word_error_rate
from nejm_b2txt_utils.phonemes import model_to_lm_order
from nejm_b2txt_utils.redis_server import RedisServer
from nejm_b2txt_utils.t15_hdf5 import T15File, list_sessions

N_VAL = 7


def base_args(trained_model, tiny_data, out_dir, *extra):
    return ["--model_path", str(trained_model), "--data_dir", str(tiny_data / "hdf5_data_final"),
            "--csv_path", str(tiny_data / "t15_copyTaskData_description.csv"), "--eval_type", "val",
            "--gpu_number", "-1", "--out_dir", str(out_dir), *extra]


def read_csv(out_dir):
    (path,) = out_dir.glob("baseline_rnn_val_*.csv")  # predicted_sentences, or greedy_phonemes with --lm none
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "text"]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    return [r[1] for r in rows[1:]]


def val_trials(tiny_data):
    root = tiny_data / "hdf5_data_final"
    out = []
    for day, session in enumerate(list_sessions(root)):
        path = root / session / "data_val.hdf5"
        if path.exists():
            with T15File(path) as f:
                out += [(day, t) for t in f]
    return out


def test_greedy_mode_writes_csv_table_and_results(trained_model, tiny_data, tmp_path, capsys):
    pkl = tmp_path / "results.pkl"
    assert evaluate_model.main(base_args(trained_model, tiny_data, tmp_path, "--lm", "none",
                                         "--results_pkl", str(pkl))) == 0
    texts = read_csv(tmp_path)
    with open(pkl, "rb") as fh:
        res = pickle.load(fh)
    assert len(texts) == N_VAL and texts == [" ".join(p) for p in res["greedy_phonemes"]]
    assert all(t and set(t.split()) <= set(res["greedy_phonemes"][0]) | set(sum(res["greedy_phonemes"], []))
               for t in texts)
    assert res["logits"][0].dtype == np.float32 and res["logits"][0].shape[1] == 41
    trials = val_trials(tiny_data)
    assert res["sentence_label"] == [t.sentence_label for _, t in trials]
    assert res["corpus"][0] != "unknown"
    table = capsys.readouterr().out
    lines = table.strip().splitlines()
    assert lines[0].split()[:2] == ["corpus", "n"] and lines[-1].split()[:2] == ["all", str(N_VAL)]
    assert any(line.startswith(res["corpus"][0]) for line in lines[1:-1])
    assert lines[-1].split()[-1] == "-"  # no WER without an LM


def test_description_csv_defaults_to_the_one_beside_data_dir(trained_model, tiny_data, tmp_path):
    """Issue case: --csv_path defaulted next to the code, so synthetic corpora read 'unknown'."""
    args = [a for a in base_args(trained_model, tiny_data, tmp_path, "--lm", "none", "--results_pkl",
                                 str(tmp_path / "r.pkl"))]
    i = args.index("--csv_path")
    del args[i:i + 2]
    assert evaluate_model.main(args) == 0
    with open(tmp_path / "r.pkl", "rb") as fh:
        corpora = pickle.load(fh)["corpus"]
    assert len(corpora) == N_VAL and "unknown" not in corpora


def _letters(n: int) -> str:
    """A number as letters (52 -> 'fc'): submission text holds no digits."""
    return "".join("abcdefghij"[int(d)] for d in str(n))


class FakeLM:
    """Answers the LM protocol on a real Redis; records logits payloads; can go silent after k finalizes."""

    def __init__(self, server, max_finals=None):
        self.r = server.client()
        self.max_finals = max_finals
        self.payloads: list[bytes] = []
        self.finals = 0
        self.stop = threading.Event()
        self.start_ms = rp.redis_time_ms(self.r)
        time.sleep(0.002)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        last = {s: self.start_ms for s in (rp.RESET_STREAM, rp.INPUT_STREAM, rp.FINALIZE_STREAM)}
        while not self.stop.is_set():
            if self.max_finals is not None and self.finals >= self.max_finals:
                time.sleep(0.01)  # the "killed" server: nothing answers any more
                continue
            for stream, entries in self.r.xread(last, count=1, block=20) or []:
                stream = stream.decode()
                entry_id, fields = entries[0]
                last[stream] = entry_id
                if stream == rp.RESET_STREAM:
                    self.r.xadd(rp.DONE_RESETTING_STREAM, {"done": 1})
                elif stream == rp.INPUT_STREAM:
                    self.payloads.append(fields[b"logits"])
                    self.r.xadd(rp.PARTIAL_OUTPUT_STREAM, {"lm_response_partial": "partial"})
                else:
                    n = len(rp.decode_logits(self.payloads[-1]))
                    scoring = rp.format_scoring([rp.Candidate("worse guess", -9.0, -2.0, 0.0, -9.0),
                                                 rp.Candidate(f"i heard {_letters(n)} frames", -1.0, -2.0, 0.0, -2.3)])
                    self.r.xadd(rp.FINAL_OUTPUT_STREAM, {"lm_response_final": "x", "scoring": scoring,
                                                         "context_str": ""})
                    self.r.xadd(rp.DONE_FINALIZING_STREAM, {"done": 1})
                    self.finals += 1

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.mark.slow
def test_redis_protocol_bytes_wer_and_resume_after_the_lm_dies(trained_model, tiny_data, tmp_path, capsys):
    model, model_args = load_trained_model(trained_model)
    transforms = model_args.dataset.data_transforms
    expected = [rp.encode_logits(model_to_lm_order(infer_trial(model, t.input_features, day, "cpu", transforms)))
                for day, t in val_trials(tiny_data)]
    labels = [t.sentence_label for _, t in val_trials(tiny_data)]
    with RedisServer() as server:
        server.client().set("someone_elses_key", "keep me")
        lm_dir = tmp_path / "lm"  # what the server publishes on remote_lm_args goes into the manifest
        lm_dir.mkdir()
        (lm_dir / "words.txt").write_text("<eps> 0\nhello 1\n")
        server.client().xadd(rp.ARGS_STREAM, {"lm_path": str(lm_dir), "acoustic_scale": 0.325})
        lm = FakeLM(server)
        try:
            out = tmp_path / "full"
            code = evaluate_model.main(base_args(trained_model, tiny_data, out, "--redis_port", str(server.port),
                                                 "--redis_timeout", "10"))
        finally:
            lm.close()
        assert code == 0
        assert lm.payloads == expected  # LM-order float32 C-order bytes, one message per trial, in order
        texts = read_csv(out)
        assert texts == [f"i heard {_letters(len(e) // 164)} frames" for e in expected]  # best total, not first listed
        table = capsys.readouterr().out.strip().splitlines()
        wer = word_error_rate(labels, texts)
        assert table[-1].split()[-3] == f"{100 * wer.rate:.2f}"
        assert server.client().get("someone_elses_key") == b"keep me"  # never FLUSHALL
        manifest = json.loads(next(out.glob("*.csv.manifest.json")).read_text())
        assert manifest["lm_server"]["args"] == {"lm_path": str(lm_dir), "acoustic_scale": 0.325}
        words_sha = hashlib.sha256(b"<eps> 0\nhello 1\n").hexdigest()
        assert manifest["lm_server"]["lm_folder"]["files"] == {"words.txt": {"bytes": 16, "sha256": words_sha}}

        # an LM server that dies after 3 trials: a clear timeout, 3 trials saved; the rerun decodes the other 4
        out = tmp_path / "resumed"
        dying = FakeLM(server, max_finals=3)
        try:
            code = evaluate_model.main(base_args(trained_model, tiny_data, out, "--redis_port", str(server.port),
                                                 "--redis_timeout", "2"))
        finally:
            dying.close()
        assert code == 3
        err = capsys.readouterr().err
        assert "no answer from the LM server" in err and "rerun the same command" in err
        partial = (out / ".eval_partial_val_redis.jsonl").read_text().splitlines()
        assert json.loads(partial[0])["header"]["lm"] == "redis" and len(partial) == 1 + 3
        assert not list(out.glob("*.csv"))
        fresh = FakeLM(server)
        try:
            code = evaluate_model.main(base_args(trained_model, tiny_data, out, "--redis_port", str(server.port),
                                                 "--redis_timeout", "10"))
        finally:
            fresh.close()
        assert code == 0
        assert fresh.payloads == expected[3:]  # each trial decoded exactly once over both runs
        assert read_csv(out) == texts


def test_unreachable_redis_and_foreign_partial_results(trained_model, tiny_data, tmp_path, capsys):
    from nejm_b2txt_utils.redis_server import free_port

    code = evaluate_model.main(base_args(trained_model, tiny_data, tmp_path, "--redis_port", str(free_port()),
                                         "--redis_timeout", "1"))
    assert code == 2 and "cannot reach Redis" in capsys.readouterr().err
    partial = tmp_path / ".eval_partial_val_none.jsonl"
    partial.write_text(json.dumps({"header": {"format": "b2txt-eval-partial/1", "lm": "none"}}) + "\n")
    code = evaluate_model.main(base_args(trained_model, tiny_data, tmp_path, "--lm", "none"))
    assert code == 2 and "--restart" in capsys.readouterr().err
    assert evaluate_model.main(base_args(trained_model, tiny_data, tmp_path, "--lm", "none", "--restart")) == 0
