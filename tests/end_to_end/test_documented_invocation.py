"""The original's documented LM invocation lives once (``lm_params.DOCUMENTED_INVOCATION``); the evaluator keeps
what the server decoded with (``remote_lm_args``) and both LM clients answer the one ``LMClient`` protocol."""

from __future__ import annotations

import pickle

import pytest

from end_to_end.report import server_acoustic_scale
from model_training.eval_results import write_results_pkl
from nejm_b2txt_utils import redis_protocol as rp
from nejm_b2txt_utils.hypothesis import Hypothesis
from nejm_b2txt_utils.lm_params import DOCUMENTED_INVOCATION, LMParamError, LMParams, documented_flags
from nejm_b2txt_utils.redis_multi_client import MultiClientLMClient
from nejm_b2txt_utils.redis_server import RedisServer


def test_documented_flags_are_the_original_readme_values_and_parse():
    flags = documented_flags(gpu_number=-1)
    pairs = dict(zip(flags[::2], flags[1::2]))
    assert pairs == {"--acoustic_scale": "0.325", "--nbest": "100", "--blank_penalty": "90", "--alpha": "0.55",
                     "--gpu_number": "-1"}
    params = LMParams(**DOCUMENTED_INVOCATION)
    assert (params.acoustic_scale, params.blank_penalty, params.alpha, params.nbest) == (0.325, 90.0, 0.55, 100)
    with pytest.raises(LMParamError, match="unknown LM parameter"):
        documented_flags(acoustic_scael=1.0)


def test_ngram_scored_is_the_wfst_total():
    h = Hypothesis("i need water", ac=-20.0, lm=-3.5, llm=-7.0)
    assert h.ngram_scored(0.325).total == pytest.approx(0.325 * -20.0 - 3.5) and h.total is None


def test_results_pkl_keeps_the_server_args_and_the_report_reads_its_scale(tmp_path):
    with RedisServer() as rs:
        r = rs.client()
        assert rp.read_server_args(r) is None
        r.xadd(rp.ARGS_STREAM, LMParams(**DOCUMENTED_INVOCATION).redis_args("/lm/3gram"))
        r.xadd(rp.ARGS_STREAM, LMParams(**{**DOCUMENTED_INVOCATION, "acoustic_scale": 1.5}).redis_args("/lm/3gram"))
        single, multi = rp.RemoteLMClient(r), MultiClientLMClient(r)
        args = single.server_args()
        assert args["acoustic_scale"] == 1.5 and args["lm_path"] == "/lm/3gram" and args["nbest"] == 100
        multi.update_params(acoustic_scale=0.7)
        assert multi.server_args()["acoustic_scale"] == 0.7  # its per-utterance value wins
        with pytest.raises(rp.LMProtocolError):
            multi.update_params(acoustic_scael=0.7)
    path = write_results_pkl([], tmp_path / "results.pkl", args)
    results = pickle.loads(path.read_bytes())
    assert server_acoustic_scale(results, path) == 1.5
    with pytest.raises(ValueError, match="no remote_lm_args.acoustic_scale"):
        server_acoustic_scale(pickle.loads(write_results_pkl([], tmp_path / "greedy.pkl").read_bytes()), path)
