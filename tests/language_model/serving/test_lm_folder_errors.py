"""A damaged LM folder stops the server at start-up with one line naming the file, exit 2 (issue 13 case 3).

Every file the server reads from an LM folder (``TLG.fst``, ``words.txt``; ``G.fst`` and ``G_no_prune.fst``
with ``--rescore``), truncated, empty, replaced by text or with a header that claims more states than the
file holds: never a traceback, never a server that starts and then fails every finalize.
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import sys

import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from language_model.serving import server  # noqa: E402
from language_model.serving.handler import FINALIZE, LOGITS, UPDATE, handle_message, open_session  # noqa: E402
from language_model.serving.service import LMService  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402
from nejm_b2txt_utils.redis_protocol import encode_logits  # noqa: E402
from tests.language_model._lm_testing import STANDALONE  # noqa: E402

FST_ERROR = "not a readable OpenFST file, truncated or corrupt?"


@pytest.fixture(scope="module")
def good_lm(tmp_path_factory):
    return build_toy_lm(tmp_path_factory.mktemp("lm") / "toy", with_unpruned=True)


def _damaged(good, tmp_path, name: str, how: str):
    lm = tmp_path / "lm"
    shutil.copytree(good, lm)
    path = lm / name
    data = path.read_bytes()
    if how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "last_byte":
        path.write_bytes(data[:-1])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("this is not an FST\n" * 20)
    elif how == "huge_state_count":  # the header's state count (int64 after magic, types, version, flags, props, start)
        header = 4 + 4 + len(b"vector") + 4 + len(b"standard") + 4 + 4 + 8 + 8
        path.write_bytes(data[:header] + struct.pack("<q", 10**15) + data[header + 8 :])
    elif how == "latin1":
        path.write_bytes(data + "caf\u00e9 999999\n".encode("latin-1"))
    elif how == "bad_line":
        path.write_bytes(data + b"two words here\n")
    return lm, path


@pytest.fixture(autouse=True)
def _never_serve(monkeypatch):
    """A folder that loads would start serving (forever): fail instead. server.main reconfigures the root
    logger onto this test's captured stream; later tests must not log into it once it is closed."""
    def serve(*_args):
        raise AssertionError("the server loaded the damaged folder and started serving")
    monkeypatch.setattr(server, "_run_worker", serve)
    monkeypatch.setattr(server, "_supervise", serve)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _start(lm, *extra) -> int:
    return server.main(["--lm_path", str(lm), "--redis_ip", "127.0.0.1", "--redis_port", "1", "--legacy", "on",
                        *extra])


@pytest.mark.parametrize("how", ["half", "last_byte", "empty", "text", "huge_state_count"])
@pytest.mark.parametrize(("name", "extra"), [("TLG.fst", ()), ("G_no_prune.fst", ("--rescore",)),
                                             ("G.fst", ("--rescore",)),
                                             ("G_no_prune.fst", ("--rescore", "--num_workers", "2"))])
def test_damaged_fst_is_a_one_line_start_up_error(good_lm, tmp_path, capsys, name, extra, how):
    lm, path = _damaged(good_lm, tmp_path, name, how)
    assert _start(lm, *extra) == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert out[-1].startswith(f"error: {path}: {FST_ERROR}"), out
    assert sum(str(path) in line for line in out) == 1, out  # printed once, not also logged


@pytest.mark.parametrize(("how", "expected"), [
    ("latin1", "not UTF-8 text"), ("bad_line", ":25: expected 'SYMBOL ID', got 'two words here'"),
    ("empty", "no symbols"),
])
def test_damaged_words_txt_is_a_one_line_start_up_error(good_lm, tmp_path, capsys, how, expected):
    lm, path = _damaged(good_lm, tmp_path, "words.txt", how)
    assert _start(lm) == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert out[-1].startswith(f"error: {path}") and expected in out[-1], out


def test_half_a_tlg_as_users_start_the_server(good_lm, tmp_path):
    """The issue's report, through the entry script: no traceback, one error line, exit 2."""
    lm, path = _damaged(good_lm, tmp_path, "TLG.fst", "half")
    proc = subprocess.run([sys.executable, str(STANDALONE), "--lm_path", str(lm), "--redis_ip", "127.0.0.1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {path}: {FST_ERROR} (VectorFst::Read failed)"
    assert proc.stdout == "" and proc.stderr.count("error:") == 1 and " ERROR " not in proc.stderr


def test_rescore_switched_on_over_a_damaged_grammar_is_refused(good_lm, tmp_path):
    """An update that turns on --rescore over a truncated G_no_prune.fst gets the loader's error; the session
    keeps its parameters and decodes (the original started fine and then failed every finalize)."""
    lm, path = _damaged(good_lm, tmp_path, "G_no_prune.fst", "half")
    params = LMParams(acoustic_scale=0.325, blank_penalty=90.0, gpu_number=-1)
    service = LMService(str(lm), params=params)
    session = open_session(service, params)
    reply = handle_message(service, session, UPDATE, {b"rescore": b"1"})
    assert reply["error"] == f"{path}: {FST_ERROR} (VectorFst::Read failed)" and session.params.rescore == 0
    handle_message(service, session, LOGITS, {b"logits": encode_logits(synthetic_logits("open the door"))})
    assert handle_message(service, session, FINALIZE, {})["lm_response_final"] == "open the door"
