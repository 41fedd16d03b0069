"""evaluate_model.py --lm_protocol multi: trials pipelined over the multi-client protocol give the same
answers, in order, as the original streams (a fake multi-client worker on a real redis-server)."""

import threading
import time

import pytest

from model_training import evaluate_model
from model_training.checkpoint import load_trained_model
from model_training.inference import infer_trial
from nejm_b2txt_utils import redis_multi_client as rmc
from nejm_b2txt_utils import redis_protocol as rp
from nejm_b2txt_utils.phonemes import model_to_lm_order
from nejm_b2txt_utils.redis_server import RedisServer
from tests.model_training.test_evaluate_model import _letters, base_args, read_csv, val_trials


class FakeMultiClientWorker:
    """Claims utterances through the consumer group and answers each with its frame count; records the most
    utterances announced and unanswered at a claim (the evaluator's pipelining)."""

    def __init__(self, server):
        self.r = server.client()
        self.r.xgroup_create(rmc.MC_REQUEST_STREAM, rmc.MC_GROUP, id="0", mkstream=True)
        self.payloads: dict[str, bytes] = {}
        self.most_waiting = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop.is_set():
            resp = self.r.xreadgroup(rmc.MC_GROUP, "fake", {rmc.MC_REQUEST_STREAM: ">"}, count=1, block=20)
            for entry_id, fields in resp[0][1] if resp else []:
                utt = fields[b"utt_id"].decode()
                deadline = time.monotonic() + 10
                while not self.most_waiting and self.r.xlen(rmc.MC_REQUEST_STREAM) < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)  # before the first answer, let the evaluator send ahead
                self.most_waiting = max(self.most_waiting, self.r.xlen(rmc.MC_REQUEST_STREAM))
                entries = []
                while not any(b"finalize" in f for _, f in entries):
                    entries = self.r.xrange(rmc.mc_input_stream(utt))
                self.payloads[utt] = entries[0][1][b"logits"]
                n = len(rp.decode_logits(entries[0][1][b"logits"]))
                scoring = rp.format_scoring([rp.Candidate("worse guess", -9.0, -2.0, 0.0, -9.0),
                                             rp.Candidate(f"i heard {_letters(n)} frames", -1.0, -2.0, 0.0, -2.3)])
                out = rmc.mc_output_stream(utt)
                self.r.xadd(out, {"kind": "partial", "chunk": 0, "lm_response_partial": "partial"})
                self.r.xadd(out, {"kind": "final", "lm_response_final": "x", "scoring": scoring, "context_str": ""})
                self.r.xack(rmc.MC_REQUEST_STREAM, rmc.MC_GROUP, entry_id)
                self.r.xdel(rmc.MC_REQUEST_STREAM, entry_id)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.mark.slow
def test_multi_client_protocol_pipelines_trials_and_keeps_their_order(trained_model, tiny_data, tmp_path):
    model, model_args = load_trained_model(trained_model)
    transforms = model_args.dataset.data_transforms
    expected = [rp.encode_logits(model_to_lm_order(infer_trial(model, t.input_features, day, "cpu", transforms)))
                for day, t in val_trials(tiny_data)]
    with RedisServer() as server:
        worker = FakeMultiClientWorker(server)
        try:
            code = evaluate_model.main(base_args(trained_model, tiny_data, tmp_path, "--redis_port", str(server.port),
                                                 "--redis_timeout", "10", "--lm_protocol", "multi",
                                                 "--lm_in_flight", "3"))
        finally:
            worker.close()
    assert code == 0
    assert read_csv(tmp_path) == [f"i heard {_letters(len(e) // 164)} frames" for e in expected]
    assert sorted(worker.payloads.values()) == sorted(expected)  # each trial sent once
    assert worker.most_waiting == 3  # three trials in flight (--lm_in_flight), never more


def test_lm_in_flight_must_be_positive(trained_model, tiny_data, tmp_path, capsys):
    code = evaluate_model.main(base_args(trained_model, tiny_data, tmp_path, "--lm_protocol", "multi",
                                         "--lm_in_flight", "0"))
    assert code == 2 and "--lm_in_flight: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_unreachable_redis_with_the_multi_client_protocol(trained_model, tiny_data, tmp_path, capsys):
    from nejm_b2txt_utils.redis_server import free_port

    code = evaluate_model.main(base_args(trained_model, tiny_data, tmp_path, "--lm_protocol", "multi",
                                         "--redis_port", str(free_port()), "--redis_timeout", "1"))
    assert code == 2 and "cannot reach Redis" in capsys.readouterr().err
