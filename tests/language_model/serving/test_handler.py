"""The one message handler both protocols call: bad input is answered and changes nothing; bad start-up flags
are one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from language_model.serving.handler import FINALIZE, LOGITS, RESET, UPDATE, handle_message, open_session  # noqa: E402
from language_model.serving.service import LMService  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402
from nejm_b2txt_utils.redis_protocol import encode_logits, parse_scoring  # noqa: E402
from tests.language_model._lm_testing import STANDALONE  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    lm_dir = build_toy_lm(tmp_path_factory.mktemp("lm") / "toy")
    return LMService(str(lm_dir), params=LMParams(acoustic_scale=0.325, blank_penalty=90.0, gpu_number=-1))


def test_out_of_range_updates_are_refused_and_the_session_keeps_serving(service):
    session = open_session(service, service.startup)
    before = session.params
    for fields, field in [({b"max_active": b"1e12"}, "max_active"), ({b"acoustic_scale": b"inf"}, "acoustic_scale"),
                          ({b"nbest": b"-3"}, "nbest"), ({b"beam": b"nan"}, "beam")]:
        reply = handle_message(service, session, UPDATE, fields)
        assert reply["done"] == 1 and field in reply["error"] and "expected" in reply["error"]
        assert session.params == before
    assert handle_message(service, session, UPDATE, {b"nbest": b"3"}) == {"done": 1}
    assert session.params.nbest == 3 and session.decoder.opts.nbest == 3  # the search uses the new value
    assert handle_message(service, session, RESET, {}) == {"done": 1}
    logits = synthetic_logits("i need water")
    bad = handle_message(service, session, LOGITS, {b"logits": b"\x00" * 100})
    assert bad["lm_response_partial"] == "" and "multiple of 164" in bad["error"]
    extra = handle_message(service, session, LOGITS, {b"logits": encode_logits(logits), b"x": b"1"}, source="s")
    assert extra["error"] == "s: unknown field(s) ['x']; expected only 'logits' (and the optional 'dtype', 'shape')"
    nan = logits.copy()
    nan[2, 3] = np.nan
    assert "NaN" in handle_message(service, session, LOGITS, {b"logits": encode_logits(nan)})["error"]
    assert handle_message(service, session, LOGITS, {b"logits": encode_logits(logits)}) == {
        "lm_response_partial": "i need water"}
    final = handle_message(service, session, FINALIZE, {}, context="ctx")
    assert final["lm_response_final"] == "i need water" and final["context_str"] == "ctx"
    parsed = parse_scoring(final["scoring"])
    assert parsed["candidate_sentences"][0] == "i need water"
    for ac, ng, total in zip(parsed["candidate_acoustic_scores"], parsed["candidate_ngram_scores"],
                             parsed["candidate_total_scores"]):
        assert total == pytest.approx(0.325 * ac + ng, abs=1e-9)


@pytest.mark.parametrize("flags, expected", [
    (["--max_active", "1e12"], "--max_active='1e12': expected a whole number in [2, 2147483647]"),
    (["--acoustic_scale", "inf"], "--acoustic_scale='inf': expected a finite number in (0, inf)"),
    (["--num_workers", "0"], "--num_workers='0': expected a whole number in [1, 1024]"),
    (["--legacy", "maybe"], "argument --legacy: invalid choice"),
])
def test_bad_start_up_flags_are_one_line_and_exit_2(tmp_path, flags, expected):
    proc = subprocess.run([sys.executable, str(STANDALONE), "--lm_path", str(tmp_path), *flags],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
