import threading
import time

import numpy as np
import pytest

from nejm_b2txt_utils import redis_protocol as rp
from nejm_b2txt_utils.redis_server import RedisServer


def test_logits_bytes_are_c_order_float32():
    x = np.arange(3 * 41, dtype=np.float64).reshape(3, 41)
    payload = rp.encode_logits(x)
    assert len(payload) == 3 * 41 * 4
    assert payload[:8] == np.array([0.0, 1.0], dtype="<f4").tobytes()
    np.testing.assert_array_equal(rp.decode_logits(payload), x.astype(np.float32))


def test_malformed_logits_are_rejected():
    with pytest.raises(rp.LMProtocolError, match="not a multiple of 164"):
        rp.decode_logits(b"\x00" * 100)
    bad = np.zeros((2, 41), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(rp.LMProtocolError, match="NaN"):
        rp.decode_logits(bad.tobytes())
    with pytest.raises(rp.LMProtocolError, match=r"\[T, 41\]"):
        rp.encode_logits(np.zeros((2, 40)))


def test_scoring_round_trip_sorts_and_dedups_like_the_original_client():
    cands = [rp.Candidate("i need water", -10.0, -5.0, -20.0, -12.0),
             rp.Candidate("i need some water", -9.0, -7.0, -25.0, -15.5),
             rp.Candidate("i need water", -11.0, -5.0, -20.0, -13.0),
             rp.Candidate("i kneed water", -8.0, -9.0, -30.0, -11.0)]
    s = rp.format_scoring(cands)
    assert s.split(";")[:5] == ["i need water", "-10.0", "-5.0", "-20.0", "-12.0"]
    out = rp.parse_scoring(s)
    assert out["candidate_sentences"] == ["i kneed water", "i need water", "i need some water"]
    assert out["candidate_total_scores"] == [-11.0, -12.0, -15.5]
    assert rp.parse_scoring("")["candidate_sentences"] == [""]


def _fake_server(r, start_ms, stop):
    """Answers the original protocol: ack resets, echo a partial, final = argmax-based sentence."""
    last = {s: start_ms for s in (rp.RESET_STREAM, rp.INPUT_STREAM, rp.FINALIZE_STREAM)}
    seen = None
    while not stop.is_set():
        resp = r.xread(last, count=1, block=50)
        for stream, entries in resp or []:
            stream = stream.decode()
            entry_id, fields = entries[0]
            last[stream] = entry_id
            if stream == rp.RESET_STREAM:
                r.xadd(rp.DONE_RESETTING_STREAM, {"done": 1})
            elif stream == rp.INPUT_STREAM:
                seen = rp.decode_logits(fields[b"logits"])
                r.xadd(rp.PARTIAL_OUTPUT_STREAM, {"lm_response_partial": f"frames {len(seen)}"})
            else:
                cls = int(seen.sum(axis=0).argmax())
                scoring = rp.format_scoring([rp.Candidate(f"class {cls}", -1.0, -2.0, 0.0, -2.3),
                                             rp.Candidate("worse", -5.0, -2.0, 0.0, -9.0)])
                r.xadd(rp.FINAL_OUTPUT_STREAM, {"lm_response_final": f"class {cls}", "scoring": scoring,
                                                "context_str": ""})
                r.xadd(rp.DONE_FINALIZING_STREAM, {"done": 1})


def test_client_round_trip_through_a_real_redis_server():
    with RedisServer() as server:
        r = server.client()
        stop = threading.Event()
        start_ms = rp.redis_time_ms(r)
        time.sleep(0.002)  # ids in the same millisecond as a last-seen id are skipped (spec LM §2.1)
        th = threading.Thread(target=_fake_server, args=(server.client(), start_ms, stop), daemon=True)
        th.start()
        try:
            client = rp.RemoteLMClient(r, timeout_s=10)
            for cls in (5, 17):
                x = np.zeros((7, 41), np.float32)
                x[:, cls] = 3.0
                client.reset()
                assert client.send_logits(x) == "frames 7"
                out = client.finalize()
                assert out["candidate_sentences"] == [f"class {cls}", "worse"]
            # the bytes on the stream are exactly the float32 C-order array
            last = r.xrevrange(rp.INPUT_STREAM, count=1)[0][1][b"logits"]
            assert last == x.tobytes()
        finally:
            stop.set()
            th.join(2)


def test_client_times_out_with_a_clear_message_when_no_server_answers():
    with RedisServer() as server:
        client = rp.RemoteLMClient(server.client(), timeout_s=0.5, block_ms=100)
        with pytest.raises(rp.LMTimeoutError, match="remote_lm_done_resetting.*language-model-standalone"):
            client.reset()


def test_update_params_rejects_unknown_fields():
    with RedisServer() as server:
        client = rp.RemoteLMClient(server.client(), timeout_s=0.2)
        with pytest.raises(rp.LMProtocolError, match="unknown field"):
            client.update_params(beam_width=3)


def test_redis_server_binds_loopback_only():
    with RedisServer() as server:
        r = server.client()
        assert r.config_get("bind")["bind"] == "127.0.0.1"
        assert r.ping()


def test_logits_fields_and_plausibility_issue_22_case_5():
    rng = np.random.default_rng(0)
    for x in (rng.normal(0, 0.1, (52, 41)), rng.normal(0, 8, (40, 41)), np.zeros((3, 41))):  # float32: decoded
        fields = rp.logits_fields(x)
        assert fields["dtype"] == "float32" and fields["shape"] == f"{len(x)},41"
        got = rp.decode_logits(fields["logits"], fields["dtype"].encode(), fields["shape"].encode())
        assert np.array_equal(got, np.float32(x))
    for x in (rng.normal(0, 0.1, (52, 41)), rng.normal(0, 8, (40, 41))):  # other dtypes' bytes: refused
        for dtype in (np.float16, np.float64):
            with pytest.raises(rp.LMProtocolError, match="implausible float32 values|NaN or Inf"):
                rp.decode_logits(x.astype(dtype).tobytes())
    with pytest.raises(rp.LMProtocolError, match="shape '41,40': expected '40,41'"):
        rp.decode_logits(np.zeros((41, 40), np.float32).tobytes(), shape=b"41,40")
    with pytest.raises(rp.LMProtocolError, match="dtype 'float16'"):
        rp.decode_logits(np.zeros((2, 41), np.float16).tobytes(), dtype="float16")
