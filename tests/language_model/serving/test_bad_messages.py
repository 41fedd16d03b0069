"""Bad messages never stop the LM server (issue 13 cases 1 and 2), against a real redis-server.

Case 1: every field of every stream (update, input, reset, finalize) with values of every type and range
(over int32, inf, nan, negative, text, bytes that are not UTF-8) gets an ``error`` reply naming the field,
the value and what was expected; nothing changes (``remote_lm_args`` is not re-published, the next correct
decode returns the right sentence) and the server keeps serving. Case 2: reset, logits and finalize sent in
one pipeline without waiting are handled in stream-ID order, so the final answer is the decoded sentence.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from nejm_b2txt_utils import redis_protocol as rp  # noqa: E402
from nejm_b2txt_utils.redis_server import RedisServer  # noqa: E402
from tests.language_model._lm_testing import OriginalClient, ServerProcess, wait_until  # noqa: E402

INT32_MAX = 2**31 - 1
#: Independent statement of each run-time parameter's valid range (spec LM §3.1 plus the int32 limit of the
#: original's C++ decoder): values each row must reject. Every row also rejects the COMMON values.
COMMON = ["inf", "-inf", "nan", "abc", "", "1e400", b"\xff\xfe"]
INVALID = {
    "max_active": ["1e12", "3000000000", "1", "-1", "2.5"],
    "min_active": ["3000000000", "-1", "8000", "0.5"],  # 8000 > max_active (7000)
    "beam": ["0", "-1", "1001", "1e39"],
    "lattice_beam": ["0", "-3", "20.5", "1e39", "1e308"],  # 1e39: inf as float32, segfaulted the C++ decoder
    "acoustic_scale": ["0", "-0.3"],
    "ctc_blank_skip_threshold": ["0", "1.5", "-1"],
    "length_penalty": [],
    "nbest": ["0", "-1", "3000000000", "1.5"],
    "blank_penalty": ["0", "-9"],
    "alpha": ["-0.1", "1.5"],
    "do_opt": ["2", "-1", "0.5"],
    "rescore": ["2", "-1"],
    "top_candidates_to_augment": ["-1", "1e12", "2.5"],
    "score_penalty_percent": ["-0.01"],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One redis-server and one LM server (``--legacy on``: no lock-key wait) for the whole module."""
    tmp = tmp_path_factory.mktemp("bad_messages")
    lm_dir = build_toy_lm(tmp / "toy")
    with RedisServer() as redis_srv:
        server = ServerProcess(lm_dir, redis_srv.port, "--legacy", "on", log_path=tmp / "server.log").start()
        try:
            r = redis_srv.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 30, "server start")
            yield redis_srv, server
        finally:
            server.stop()


@pytest.fixture
def client(served):
    redis_srv, server = served
    c = OriginalClient(redis_srv.client(), timeout_s=10)  # FLUSHALL: each test starts from empty streams
    wait_until(lambda: c.r.xlen(rp.ARGS_STREAM) == 1, 5, "remote_lm_args re-published")
    yield c
    assert server.proc.poll() is None, server.log()[-3000:]


def _decodes(client: OriginalClient, sentence: str = "i need water") -> None:
    partial, final = client.decode_trial(synthetic_logits(sentence, seed=3))
    assert partial == {b"lm_response_partial": sentence.encode()}
    assert final[b"lm_response_final"] == sentence.encode() and b"error" not in final


def test_update_params_rejects_every_bad_value_and_changes_nothing(client):
    args_before = client.r.xrange(rp.ARGS_STREAM)
    n_sent = 0
    for name, values in INVALID.items():
        for value in values + COMMON:
            ack = client.update_params(**{name: value})
            n_sent += 1
            shown = value.decode(errors="replace") if isinstance(value, bytes) else value
            assert set(ack) == {b"done", b"error"}, (name, value, ack)
            err = ack[b"error"].decode()
            assert name in err and (repr(shown) in err or f"={shown}:" in err) and "expected" in err, (name, value, err)
    assert n_sent > 120
    # the issue's case, as redis-py sends a Python float: 1e12 -> '1000000000000.0'
    err = client.update_params(max_active=1e12)[b"error"].decode()
    assert err == "update_params: max_active='1000000000000.0': expected a whole number in [2, 2147483647]"
    err = client.update_params(acoustic_scale=float("inf"))[b"error"].decode()
    assert err == "update_params: acoustic_scale='inf': expected a finite number in (0, inf)"
    # unknown / non-UTF-8 field names, and a bad value next to a good one: nothing applied
    assert b"unknown field" in client.update_params(**{"acoustic_scal": 0.3})[b"error"]
    client.r.xadd(rp.UPDATE_PARAMS_STREAM, {b"\xff\xfe": 1})
    assert b"unknown field" in client._wait(rp.DONE_UPDATING_PARAMS_STREAM)[b"error"]
    assert b"nbest" in client.update_params(acoustic_scale=0.5, nbest="nan")[b"error"]
    assert client.r.xrange(rp.ARGS_STREAM) == args_before  # no update was applied
    _decodes(client)
    # the int32 bounds themselves are valid
    assert client.update_params(max_active=INT32_MAX, min_active=0) == {b"done": b"1"}
    args = client.r.xrange(rp.ARGS_STREAM)[-1][1]
    assert args[b"max_active"] == b"2147483647" and args[b"min_active"] == b"0"
    _decodes(client, "open the door")
    assert client.update_params(max_active=7000, min_active=200) == {b"done": b"1"}


LOGITS_OK = synthetic_logits("please help me", seed=1)
NOISE = np.random.default_rng(0).normal(size=(60, 41)).astype(np.float32)  # an early checkpoint: near-uniform


def _with(value: float, where=(2, 5)) -> bytes:
    x = LOGITS_OK.copy()
    x[where] = value
    return x.tobytes()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"logits": b"\x00" * 100}, "100 bytes is not a multiple of 164"),
        ({"logits": b"abc"}, "3 bytes is not a multiple of 164"),
        ({"logits": b""}, "0 bytes"),
        ({"logits": _with(np.nan)}, "NaN or Inf"),
        ({"logits": _with(np.inf)}, "NaN or Inf"),
        ({"logits": _with(-np.inf)}, "NaN or Inf"),
        ({"logits": LOGITS_OK.tobytes(), "x": 1}, "unknown field(s) ['x']"),
        ({"x": LOGITS_OK.tobytes()}, "unknown field(s) ['x']"),
        ({b"\xff": LOGITS_OK.tobytes()}, "unknown field(s)"),
        # issue 22 case 5: wrong shape or type, same byte count as some [T, 41] float32
        ({"logits": np.ascontiguousarray(LOGITS_OK[:38].T).tobytes(), "shape": "41,38"}, "shape '41,38'"),
        ({"logits": np.zeros((41, 42), np.float32).tobytes(), "shape": "41,42", "dtype": "float32"},
         "shape '41,42': expected '42,41'"),
        ({"logits": LOGITS_OK[:38].astype(np.float16).tobytes()}, "implausible float32 values"),
        ({"logits": (0.1 * NOISE[:40]).astype(np.float16).tobytes()}, "implausible float32 values"),
        ({"logits": LOGITS_OK[:20].astype(np.float64).tobytes()}, "implausible float32 values"),
        ({"logits": LOGITS_OK[:38].astype(np.float16).tobytes(), "dtype": "float16"}, "dtype 'float16'"),
    ],
)
def test_bad_logits_get_an_error_and_leave_the_utterance_alone(client, fields, expected):
    client.reset()
    first = client.send_logits(LOGITS_OK[:20])[b"lm_response_partial"]
    reply = client.send_raw(fields)
    assert reply[b"lm_response_partial"] == b"" and expected in reply[b"error"].decode(), reply
    assert client.send_logits(LOGITS_OK[20:]) == {b"lm_response_partial": b"please help me"} and first
    assert client.finalize()[b"lm_response_final"] == b"please help me"


def test_extreme_finite_logits_are_refused_without_harm(client):
    client.reset()
    x = np.full((6, 41), -3.0e38, np.float32)
    x[:, 0] = 3.0e38
    reply = client.send_logits(x)
    assert reply[b"lm_response_partial"] == b"" and b"implausible float32 values" in reply[b"error"]
    client.finalize()
    _decodes(client)


@pytest.mark.parametrize("stream", [rp.RESET_STREAM, rp.FINALIZE_STREAM])
@pytest.mark.parametrize("fields", [{"done": "nan"}, {"done": b"\xff" * 3}, {"done": 10**30}])
def test_reset_and_finalize_ignore_the_value_of_done(client, stream, fields):
    """The original ignores the value of ``done`` (spec §2.2): any value is a reset / finalize."""
    client.reset()
    client.send_logits(LOGITS_OK)
    client.r.xadd(stream, fields)
    if stream == rp.RESET_STREAM:
        assert client._wait(rp.DONE_RESETTING_STREAM) == {b"done": b"1"}
        assert client.finalize()[b"lm_response_final"] == b""  # the reset dropped the frames
    else:
        assert client._wait(rp.FINAL_OUTPUT_STREAM)[b"lm_response_final"] == b"please help me"


@pytest.mark.parametrize("stream", [rp.RESET_STREAM, rp.FINALIZE_STREAM])
@pytest.mark.parametrize("fields", [{"done": 0, "x": 1}, {"x": "y" * 1000}, {b"\xfe": 0}])
def test_reset_and_finalize_with_unknown_fields_are_rejected(client, stream, fields):
    client.reset()
    client.send_logits(LOGITS_OK)
    client.r.xadd(stream, fields)
    if stream == rp.RESET_STREAM:
        ack = client._wait(rp.DONE_RESETTING_STREAM)
        assert ack[b"done"] == b"1" and b"unknown field" in ack[b"error"] and b"'done'" in ack[b"error"]
    else:
        final = client._wait(rp.FINAL_OUTPUT_STREAM)
        assert final[b"lm_response_final"] == b"" and final[b"scoring"] == b""
        assert b"unknown field" in final[b"error"] and b"'done'" in final[b"error"]
    # nothing happened: the frames are still there and a correct finalize decodes them
    assert client.finalize()[b"lm_response_final"] == b"please help me"


def _pipeline(r, *entries) -> None:
    pipe = r.pipeline(transaction=False)
    for stream, fields in entries:
        pipe.xadd(stream, fields)
    pipe.execute()


def _utterance(sentence: str, seed: int, chunks: int = 1) -> list:
    x = synthetic_logits(sentence, seed=seed)
    bounds = np.linspace(0, len(x), chunks + 1).astype(int)
    return ([(rp.RESET_STREAM, {"done": 0})]
            + [(rp.INPUT_STREAM, {"logits": x[a:b].tobytes()}) for a, b in zip(bounds[:-1], bounds[1:])]
            + [(rp.FINALIZE_STREAM, {"done": 0})])


def test_pipelined_requests_are_answered_in_order(client):
    """Case 2: reset, logits and finalize in one pipeline (no waiting): the final is the decoded sentence,
    and nothing leaks into the next utterance; several utterances (and chunks) in one pipeline too."""
    _pipeline(client.r, *_utterance("please help me", 1))
    assert client._wait(rp.FINAL_OUTPUT_STREAM)[b"lm_response_final"] == b"please help me"
    _pipeline(client.r, *_utterance("open the door", 2, chunks=3))  # one utterance in chunks
    assert client._wait(rp.FINAL_OUTPUT_STREAM)[b"lm_response_final"] == b"open the door"
    sentences = ["go home now", "i need water", "you need some water", "help me now"]
    entries = [e for k, s in enumerate(sentences) for e in _utterance(s, k)]
    entries.insert(1, (rp.UPDATE_PARAMS_STREAM, {"nbest": 5}))
    _pipeline(client.r, *entries)  # several utterances, an update after the first reset
    finals = [client._wait(rp.FINAL_OUTPUT_STREAM)[b"lm_response_final"].decode() for _ in sentences]
    assert finals == sentences
    assert client.r.xrange(rp.ARGS_STREAM)[-1][1][b"nbest"] == b"5"
    partials = [f[b"lm_response_partial"].decode() for _, f in client.r.xrange(rp.PARTIAL_OUTPUT_STREAM)]
    assert partials[-1] == "help me now" and len(partials) == 1 + 3 + 4
    for stream in client.seen:  # this client read only the finals; skip the other answers
        last = client.r.xrevrange(stream, count=1)
        client.seen[stream] = last[0][0] if last else client.seen[stream]
    assert client.update_params(nbest=100) == {b"done": b"1"}
    _decodes(client)  # a client that waits for every ack sees no change
