"""The real-time decoder's frame-by-frame LM session against the real LM server: the final sentence and its
candidates equal the offline decode of the same logits sent in one message, and the end-of-speech rule
ends the sentence on the trailing silence of the toy logits."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from model_training.realtime import StreamingLM  # noqa: E402
from nejm_b2txt_utils import redis_protocol as rp  # noqa: E402
from nejm_b2txt_utils.endpoint import EndpointRule  # noqa: E402
from nejm_b2txt_utils.phonemes import lm_to_model_order  # noqa: E402
from nejm_b2txt_utils.redis_server import RedisServer  # noqa: E402
from tests.language_model._lm_testing import ServerProcess, wait_until  # noqa: E402


def test_streamed_frames_finalize_to_the_offline_decode(tmp_path):
    lm_dir = build_toy_lm(tmp_path / "toy")
    with RedisServer() as redis_srv:
        server = ServerProcess(lm_dir, redis_srv.port, log_path=tmp_path / "server.log").start()
        try:
            r = redis_srv.client()
            wait_until(lambda: r.xlen(rp.ARGS_STREAM) > 0, 90, "server start")
            client = rp.RemoteLMClient(r, timeout_s=30)
            stream = StreamingLM(client)
            for seed, sentence in enumerate(["i need water", "open the red door"]):
                lm_logits = synthetic_logits(sentence, seed=seed)  # (T, 41) LM order
                model_logits = lm_to_model_order(lm_logits)
                stream.start()
                partials = [stream.frame(row) for row in model_logits]
                text, streamed = stream.finish()
                offline_partial, offline = client.decode(lm_logits)
                assert text == offline["candidate_sentences"][0] == sentence
                assert partials[-1] == offline_partial
                assert streamed["candidate_sentences"] == offline["candidate_sentences"]
                assert np.allclose(streamed["candidate_total_scores"], offline["candidate_total_scores"], atol=1e-4)
                assert partials[0] != partials[-1]  # the text grew while the frames came
        finally:
            server.stop()


def test_end_of_speech_fires_on_the_silence_after_the_words():
    # the toy frames: 2 per phone, blank between phones, "blank SIL SIL blank" (320 ms) between words,
    # "blank SIL SIL blank" after the last word too
    speech = lm_to_model_order(synthetic_logits("i need water", seed=0))  # (T, 41) model order
    silence = np.full((5, 41), -5.0, dtype=np.float32)
    silence[:, 0] = 10.0  # blank
    frames = np.concatenate([speech, silence])
    rule = EndpointRule(trailing_ms=400, silence_prob=0.9)  # 5 frames: longer than a pause between words
    fired = [rule.update(f) for f in frames]
    assert fired.index(True) == len(speech)  # the 4 silent frames ending the speech + 1 more
    short = EndpointRule(trailing_ms=240, silence_prob=0.9)  # shorter than the pauses: cuts after "i"
    assert [short.update(f) for f in frames].index(True) == 4
