"""Fuzz the LM server over a real redis-server (issue 13): a few hundred random messages on random streams
with random fields, types, sizes and values; every message must get its reply, and afterwards a correct
decode still returns the right sentence from the same, still running, server process.

Bounded: at most ``N_MESSAGES`` messages or ``TIME_BUDGET_S`` seconds (whichever comes first), seeded
(``B2TXT_FUZZ_SEED`` changes the seed, e.g. to hunt for new failures by hand).
"""

from __future__ import annotations

import math
import os
import random
import time

import numpy as np
import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from nejm_b2txt_utils import redis_multi_client as rmc  # noqa: E402
from nejm_b2txt_utils import redis_protocol as rp  # noqa: E402
from nejm_b2txt_utils.lm_params import UPDATABLE_PARAMS  # noqa: E402
from nejm_b2txt_utils.redis_server import RedisServer  # noqa: E402
from tests.language_model._lm_testing import OriginalClient, ServerProcess, wait_until  # noqa: E402

N_MESSAGES = 300
TIME_BUDGET_S = 30.0
REPLY_TIMEOUT_S = 20.0
REPLY_STREAM = {rp.RESET_STREAM: rp.DONE_RESETTING_STREAM, rp.UPDATE_PARAMS_STREAM: rp.DONE_UPDATING_PARAMS_STREAM,
                rp.INPUT_STREAM: rp.PARTIAL_OUTPUT_STREAM, rp.FINALIZE_STREAM: rp.FINAL_OUTPUT_STREAM}
FIELD_NAMES = ["done", "logits", "finalize", "utt_id", "context", *UPDATABLE_PARAMS]


def _random_number(rng: random.Random):
    return rng.choice([
        0, 1, -1, 2**31, 2**31 - 1, -(2**31) - 1, 10**12, 10**30, rng.randint(-10**6, 10**6),
        0.5, -0.5, 1e-300, 1e308, math.inf, -math.inf, math.nan, rng.uniform(-100, 100),
    ])


def _random_logits(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    scale = rng.choice([1, 10, 1e6])
    t = rng.randint(0, 8 if scale == 1 else 30)  # flat noise over many frames: a slow (not wrong) lattice pass
    x = np.random.default_rng(rng.randrange(2**32)).normal(scale=scale, size=(t, 41))
    x = x.astype(np.float32)
    if kind == 0 and t:
        x.flat[rng.randrange(x.size)] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == 1 and t:
        x[:] = rng.choice([3.4e38, -3.4e38, 0.0])
    payload = x.tobytes()
    if kind == 2:
        payload = payload[: rng.randrange(len(payload) + 1)]  # misaligned (or empty)
    return payload


def _random_value(rng: random.Random, name: str):
    kind = rng.randrange(6)
    if kind == 0:
        return _random_number(rng)
    if kind == 1:
        return str(_random_number(rng))
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 100, 3000])))
    if kind == 3:
        return rng.choice(["", "abc", "nan", "1e400", "0x10", "1_000", " 7 ", "\u00e9", "7" * 40, "-0"])
    if kind == 4 or name == "logits":
        return _random_logits(rng)
    return rng.choice([0, 1])


def _random_fields(rng: random.Random, stream: str) -> dict:
    fields = {}
    for _ in range(rng.choice([1, 1, 1, 2, 3, 6])):
        if rng.random() < 0.8:
            name = rng.choice(FIELD_NAMES)
        else:
            name = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        fields[name] = _random_value(rng, name if isinstance(name, str) else "")
    if stream == rp.INPUT_STREAM and rng.random() < 0.5:
        fields = {"logits": _random_logits(rng)}
    if stream == rp.UPDATE_PARAMS_STREAM and rng.random() < 0.3:  # mostly plausible, to reach the search
        fields = {rng.choice(UPDATABLE_PARAMS): rng.choice(["0", "1", "2", "5", "0.5", "20", "100"])}
    return fields


def _last_id(r, stream: str) -> bytes:
    last = r.xrevrange(stream, count=1)
    return last[0][0] if last else b"0-0"


@pytest.fixture
def served(tmp_path):
    lm_dir = build_toy_lm(tmp_path / "toy", with_unpruned=True)
    with RedisServer() as redis_srv:
        server = ServerProcess(lm_dir, redis_srv.port, "--legacy", "on", log_path=tmp_path / "server.log").start()
        try:
            r = redis_srv.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 30, "server start")
            yield redis_srv, server
        finally:
            server.stop()


def test_random_messages_never_stop_the_server(served):
    redis_srv, server = served
    r = redis_srv.client()
    r = r.__class__(connection_pool=r.connection_pool.__class__(
        **{**r.connection_pool.connection_kwargs, "socket_timeout": None}))  # XREAD blocks up to REPLY_TIMEOUT_S
    seed = int(os.environ.get("B2TXT_FUZZ_SEED", "13"))
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    errors = 0
    t_end = time.monotonic() + TIME_BUDGET_S
    n = 0
    while n < N_MESSAGES and time.monotonic() < t_end:
        n += 1
        roll = rng.random()
        if roll < 0.05:  # the context key, read at finalize
            r.set(rp.CONTEXT_KEY, _random_value(rng, "context"))
            continue
        if roll < 0.12:  # the multi-client request and input streams (fire and forget)
            stream = rng.choice([rmc.MC_REQUEST_STREAM, rmc.mc_input_stream(rng.choice(["a", "b", "x y"]))])
            r.xadd(stream, _random_fields(rng, stream))
            continue
        stream = rng.choice(list(REPLY_STREAM))
        reply_stream = REPLY_STREAM[stream]
        since = _last_id(r, reply_stream)
        r.xadd(stream, _random_fields(rng, stream))
        resp = r.xread({reply_stream: since}, count=1, block=int(REPLY_TIMEOUT_S * 1000))
        assert resp, f"message {n} on {stream} (seed {seed}) got no reply; server alive: {server.proc.poll() is None}\n{server.log()[-5000:]}"
        reply = resp[0][1][0][1]
        errors += b"error" in reply
        counts[stream] = counts.get(stream, 0) + 1
    assert n >= 100 and len(counts) == 4, counts
    assert 0 < errors < n  # both accepted and rejected messages were exercised
    assert server.proc.poll() is None
    client = OriginalClient(r, timeout_s=20)
    wait_until(lambda: r.xlen(rp.ARGS_STREAM) == 1, 5, "remote_lm_args re-published")
    client.update_params(**{"max_active": 7000, "min_active": 200, "beam": 17, "lattice_beam": 8, "nbest": 100,
                            "acoustic_scale": 0.325, "blank_penalty": 90, "ctc_blank_skip_threshold": 1.0,
                            "do_opt": 0, "rescore": 0})
    _, final = client.decode_trial(synthetic_logits("open the red door", seed=5))
    assert final[b"lm_response_final"] == b"open the red door"
    assert server.proc.poll() is None
    assert "Traceback" not in server.log(), server.log()[-4000:]
