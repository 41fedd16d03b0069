"""Uninformative logits (an early checkpoint's: near-uniform over the 41 classes) and a large 1-gram: finalize is
bounded (was 251 s on 52 frames with the wordfreq 1-gram), SIGTERM ends the server mid-finalize within about a
second (was 20-30 s), and the client tells a busy server from a dead one."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

pytest.importorskip("kaldi_decoder")
pytest.importorskip("wordfreq")

from language_model import build_lm  # noqa: E402
from language_model.decoding.lattice import RawLattice, cap_lattice, read_lattice  # noqa: E402
from language_model.decoding.wfst import CtcWfstDecoder, LMResources  # noqa: E402
from nejm_b2txt_utils import redis_protocol as rp  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402
from nejm_b2txt_utils.redis_server import RedisServer  # noqa: E402
from tests.language_model._lm_testing import OriginalClient, ServerProcess, wait_until  # noqa: E402

N_WORDS = 5000  # a Zipf 1-gram over the 5000 most frequent CMU words: as ambiguous as the wordfreq one, built in seconds


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    import wordfreq

    from nejm_b2txt_utils.lexicon import cmu_dictionary

    cmu = cmu_dictionary()
    words = [w for w in wordfreq.top_n_list("en", 4 * N_WORDS) if w.isalpha() and w in cmu][:N_WORDS]
    root = tmp_path_factory.mktemp("lm1")
    tokens = [w for i, w in enumerate(words) for _ in range(max(1, 2000 // (i + 1)))]  # count ~ 1 / rank
    corpus = root / "words.txt"
    corpus.write_text("\n".join(" ".join(tokens[i:i + 10]) for i in range(0, len(tokens), 10)) + "\n")
    assert build_lm.main(["--corpus", str(corpus), "--order", "1", "--vocab", "corpus", "--out",
                          str(root / "lm")]) == 0
    return root / "lm"


def near_uniform(frames: int, seed: int = 0) -> np.ndarray:
    """An early checkpoint's output: max softmax ~0.03-0.04 over 41 classes."""
    return np.random.default_rng(seed).normal(0, 0.1, (frames, 41)).astype(np.float32)


def test_cap_lattice_keeps_the_best_paths_within_the_budget(lm_dir):
    res = LMResources(lm_dir)
    dec = CtcWfstDecoder(res, LMParams(acoustic_scale=0.325, blank_penalty=90, lattice_max_arcs=10**7))
    dec.accept_logits(near_uniform(30))
    raw = dec._lattice_pass(np.concatenate(dec._frames), 8.0)
    lat = read_lattice(raw.get_raw_lattice(True)[1])
    small, beam = cap_lattice(lat, 150, 8.0)
    assert isinstance(small, RawLattice) and 0 < len(small.flat) < len(lat.flat) and 0 <= beam < 8.0
    assert len(small.flat) <= 150 + 50  # ties at the cut are kept
    assert cap_lattice(lat, len(lat.flat), 8.0) == (lat, 8.0)


def test_near_uniform_logits_finalize_quickly_and_sigterm_stops_mid_finalize(lm_dir, tmp_path):
    with RedisServer() as rs:
        server = ServerProcess(lm_dir, rs.port, log_path=tmp_path / "server.log").start()
        try:
            r = rs.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 90, "server start")
            client = OriginalClient(r, timeout_s=60)
            t0 = time.monotonic()
            client.reset()
            client.send_logits(near_uniform(52))
            final = client.finalize()
            took = time.monotonic() - t0
            assert final[b"scoring"] and took < 10.0, took  # benchmarks/lm_finalize_bound.py has the numbers
            assert "ambiguous logits" in server.log()
            # an alive server is seen connected (the evaluator waits on instead of resetting it)
            assert rp.lm_server_connections(r) == 1
            # a long ambiguous utterance: SIGTERM during its finalize ends the server within about a second
            client.reset()
            for k in range(6):
                client.send_logits(near_uniform(100, seed=k + 1))
            r.xadd(rp.FINALIZE_STREAM, {"done": 0})
            time.sleep(1.0)
            assert server.proc.poll() is None  # still finalizing
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(timeout=30)
            stopped = time.monotonic() - t0
            assert rc in (0, -signal.SIGTERM) and stopped < 3.0, (rc, stopped)
            wait_until(lambda: rp.lm_server_connections(r) == 0, 10, "the server's connection to close")
            waiting = rp.RemoteLMClient(r, timeout_s=0.5, slow_server_waits=2)
            with pytest.raises(rp.LMTimeoutError, match="no LM server is connected"):
                waiting._wait(rp.DONE_RESETTING_STREAM, "reset")
        finally:
            server.stop()
