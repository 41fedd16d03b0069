"""The LM server against a real redis-server: the original's client protocol byte for byte, parameter
updates, error replies, several workers and clients, a killed worker, a Redis restart."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from nejm_b2txt_utils import redis_multi_client as rmc  # noqa: E402
from nejm_b2txt_utils import redis_protocol as rp  # noqa: E402
from nejm_b2txt_utils.redis_server import RedisServer  # noqa: E402
from tests.language_model._lm_testing import OriginalClient, ServerProcess, make_tiny_causal_lm, wait_until  # noqa: E402

SENTENCES = ["i need water", "please help me", "open the door", "i want to go home", "you need some water",
             "help me now", "go home now", "open the red door"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return build_toy_lm(tmp_path_factory.mktemp("lm") / "toy", with_unpruned=True)


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory):
    return make_tiny_causal_lm(tmp_path_factory.mktemp("opt") / "tiny_opt")


@pytest.fixture
def redis_srv():
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def start_server(lm_dir, redis_srv, tmp_path):
    servers = []

    def start(*extra, env=None, wait=True, name="server"):
        srv = ServerProcess(lm_dir, redis_srv.port, *extra, env=env, log_path=tmp_path / f"{name}.log").start()
        servers.append(srv)
        if wait:  # ready once it publishes remote_lm_args (serving the original streams) or joins the group
            r = redis_srv.client()
            legacy_off = "--legacy" in extra and extra[extra.index("--legacy") + 1] == "off"
            wait_until(lambda: r.exists(rmc.MC_REQUEST_STREAM) if legacy_off else r.xlen(rp.ARGS_STREAM) > 0,
                       90, "server start")  # generous: a loaded CI machine
        return srv

    yield start
    for s in servers:
        s.stop()


def test_original_client_round_trip(start_server, redis_srv):
    server = start_server()
    r = redis_srv.client()
    client = OriginalClient(r)  # FLUSHALL, as the original evaluator at start-up
    wait_until(lambda: r.xlen("remote_lm_args") == 1, 5, "remote_lm_args re-published after FLUSHALL")
    args = r.xrange("remote_lm_args")[-1][1]
    assert args[b"lm_path"].decode().endswith("toy") and args[b"nbest"] == b"100"
    assert args[b"acoustic_scale"] == b"0.325" and args[b"do_opt"] == b"0"
    for sentence in SENTENCES[:4]:
        assert client.reset() == {b"done": b"1"}
        partial = client.send_logits(synthetic_logits(sentence, seed=4))
        assert partial == {b"lm_response_partial": sentence.encode()}
        final = client.finalize()
        assert set(final) == {b"lm_response_final", b"scoring", b"context_str"}
        assert final[b"lm_response_final"].decode() == sentence and final[b"context_str"] == b""
        rows = OriginalClient.parse(final)
        assert rows[0][0] == sentence and rows[0][3] == 0.0
        for _s, ac, ng, _llm, total in rows:
            assert total == pytest.approx(0.325 * ac + ng, abs=1e-9)
        assert len({row[0] for row in rows}) == len(rows)
    wait_until(lambda: r.xlen("remote_lm_done_finalizing") == 4, 5, "four finalize acks")
    # several chunks per utterance, the context key echoed back
    r.set("contextual_decoding_current_context", "  hello there ")
    logits = synthetic_logits("you need some water", seed=1)
    client.reset()
    partials = [client.send_logits(logits[i : i + 6])[b"lm_response_partial"].decode() for i in range(0, 48, 6)]
    final = client.finalize()
    assert partials[-1] == "you need some water" and partials[0] != partials[-1]
    assert final[b"context_str"] == b"hello there"
    assert server.stop() == 0  # SIGTERM: a clean exit
    assert "worker" in server.log() and "stopped" in server.log()


def test_updates_apply_and_bad_input_gets_error_replies(start_server, redis_srv, tiny_opt):
    start_server("--opt_model", str(tiny_opt))
    r = redis_srv.client()
    client = OriginalClient(r)
    wait_until(lambda: r.xlen("remote_lm_args") == 1, 5, "remote_lm_args")
    # malformed logits: wrong byte length, NaN, an unknown field -> an error reply, and the server keeps serving
    client.reset()
    bad = client.send_raw({"logits": b"\x00" * 100})
    assert bad[b"lm_response_partial"] == b"" and b"multiple of 164" in bad[b"error"]
    nan = synthetic_logits("i need water")
    nan[3, 5] = np.nan
    assert b"NaN" in client.send_logits(nan)[b"error"]
    assert b"unknown field" in client.send_raw({"logits": synthetic_logits("i need water").tobytes(), "x": 1})[b"error"]
    assert b"unknown field" in client.update_params(acoustic_scal=0.3)[b"error"]
    assert b"error" in client.update_params(nbest=2.5)
    assert r.xlen("remote_lm_args") == 1  # rejected updates change nothing
    _, final = client.decode_trial(synthetic_logits("i need water"))
    assert final[b"lm_response_final"] == b"i need water"
    # nbest 1 crashed the original at finalize; here it answers with one candidate
    assert client.update_params(nbest=1) == {b"done": b"1"}
    assert r.xrange("remote_lm_args")[-1][1][b"nbest"] == b"1"
    rows = OriginalClient.parse(client.decode_trial(synthetic_logits("please help me"))[1])
    assert [row[0] for row in rows] == ["please help me"]
    # do_opt switched on by an update (the model was not loaded at start-up: the original crashed)
    assert client.update_params(nbest=100, do_opt=1, alpha=0.5) == {b"done": b"1"}
    rows = OriginalClient.parse(client.decode_trial(synthetic_logits("open the door"))[1])
    assert all(row[3] != 0.0 for row in rows) and len(rows) > 1
    for _s, ac, ng, llm, total in rows:
        assert total == pytest.approx(0.325 * ac + 0.5 * ng + 0.5 * llm, abs=1e-6)
    # rescore needs G_no_prune.fst, which the toy LM has: switched on, the n-gram scores change
    assert client.update_params(do_opt=0, rescore=1) == {b"done": b"1"}
    rows = OriginalClient.parse(client.decode_trial(synthetic_logits("i want to go home", seed=1))[1])
    assert rows[0][0] == "i want two go home"  # the unpruned bigram prefers it (see test_decoder)


def test_rescore_without_unpruned_grammar_refuses_to_start(tmp_path, redis_srv):
    plain = build_toy_lm(tmp_path / "plain")
    srv = ServerProcess(plain, redis_srv.port, "--rescore", log_path=tmp_path / "s.log").start()
    assert srv.proc.wait(timeout=30) == 2
    assert "G_no_prune.fst" in srv.log()
    srv = ServerProcess(plain, redis_srv.port, "--do_opt", log_path=tmp_path / "s2.log").start()
    assert srv.proc.wait(timeout=30) == 2
    assert "--opt_model smollm2" in srv.log()


def test_two_workers_many_clients_nothing_mixed_or_lost(start_server, redis_srv, tmp_path):
    start_server("--num_workers", "2", "--max_sessions", "2")
    r = redis_srv.client()
    wait_until(lambda: len(r.xinfo_consumers(rmc.MC_REQUEST_STREAM, rmc.MC_GROUP)) == 2
               if r.exists(rmc.MC_REQUEST_STREAM) else False, 30, "two workers in the group")
    results, errors = {}, []

    def run(k: int) -> None:
        try:
            c = rmc.MultiClientLMClient(redis_srv.client(), timeout_s=60)
            for j in range(3):
                sentence = SENTENCES[(k + j) % len(SENTENCES)]
                out = c.decode_trial(synthetic_logits(sentence, seed=k * 10 + j), chunk_frames=7 + k)
                results[(k, j)] = (sentence, out["candidate_sentences"][0], out["partials"][-1])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 24
    assert all(want == got == partial for want, got, partial in results.values())
    # the final answer is written before the request is acknowledged: give the last ack a moment
    wait_until(lambda: r.xlen(rmc.MC_REQUEST_STREAM) == 0, 5, "all requests acknowledged")
    consumers = r.xinfo_consumers(rmc.MC_REQUEST_STREAM, rmc.MC_GROUP)
    assert len(consumers) == 2 and all(c["pending"] == 0 for c in consumers)
    assert not r.keys("remote_lm_mc_input:*") and not r.keys("remote_lm_mc_output:*")


def test_legacy_streams_are_served_once_with_two_workers(start_server, redis_srv):
    start_server("--num_workers", "2")
    r = redis_srv.client()
    client = OriginalClient(r)  # its FLUSHALL also drops the lock key: the holder takes it back
    for sentence in SENTENCES[:3]:
        _, final = client.decode_trial(synthetic_logits(sentence))
        assert final[b"lm_response_final"].decode() == sentence
    time.sleep(0.3)
    assert r.xlen("remote_lm_done_resetting") == 3 and r.xlen("remote_lm_output_partial") == 3
    assert r.xlen("remote_lm_output_final") == 3


def test_killed_worker_loses_nothing(start_server, redis_srv):
    """kill -9 mid-utterance: the restarted worker (same name) resumes it; a second worker takes over an
    utterance whose worker stays dead. The client just keeps waiting."""
    a = start_server("--worker_name", "wa", "--claim_timeout_s", "1.5", name="wa")
    r = redis_srv.client()
    client = rmc.MultiClientLMClient(redis_srv.client(), timeout_s=60)
    logits = synthetic_logits("i want to go home", seed=2)
    utt = client.start_utterance()
    assert client.send_chunk(utt, logits[:10]) != ""
    a.stop(sig="kill")
    for i in range(10, len(logits), 10):
        client.send_chunk(utt, logits[i : i + 10], wait=False)
    a.start()  # same name: resumes its pending utterance at once
    out = client.finish(utt)
    assert out["candidate_sentences"][0] == "i want to go home" and out["partials"][-1] == "i want to go home"
    # now a worker dies for good; "wb" takes the utterance over after the claim timeout
    b = start_server("--worker_name", "wb", "--claim_timeout_s", "1.5", "--legacy", "off", name="wb")
    utt = client.start_utterance()
    client.send_chunk(utt, logits[:10])
    holder = r.xrange(rmc.mc_output_stream(utt.utt_id))[-1][1][b"worker"]
    (a if holder == b"wa" else b).stop(sig="kill")
    client.send_chunk(utt, logits[10:], wait=False)
    t0 = time.monotonic()
    out = client.finish(utt)
    assert out["candidate_sentences"][0] == "i want to go home" and time.monotonic() - t0 < 20
    wait_until(lambda: r.xlen(rmc.MC_REQUEST_STREAM) == 0, 5, "the request acknowledged and deleted")


def test_redis_restart_and_password(lm_dir, tmp_path):
    with RedisServer(password="s3cret") as redis_srv:
        port = redis_srv.port
        srv = ServerProcess(lm_dir, port, env={"REDIS_PASSWORD": "s3cret"}, log_path=tmp_path / "s.log").start()
        try:
            r = redis_srv.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 90, "server start")
            client = OriginalClient(r)
            assert client.decode_trial(synthetic_logits("help me now"))[1][b"lm_response_final"] == b"help me now"
            redis_srv.stop()
            time.sleep(3.0)
            redis_srv.start()  # same port, empty database
            r = redis_srv.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 30, "reconnect")
            client = OriginalClient(r)
            final = client.decode_trial(synthetic_logits("go home now"))[1]
            assert final[b"lm_response_final"] == b"go home now"
            log = srv.log()
            assert log.count("unreachable") == 1 and "connected to redis" in log
            assert srv.stop() == 0
        finally:
            srv.stop()
