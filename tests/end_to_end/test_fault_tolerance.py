"""Fault tolerance with real processes: a real redis-server, the real LM server (LM environment), the
real evaluator; processes are killed and restarted while an evaluation runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from end_to_end.processes import ChildProcess
from nejm_b2txt_utils.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
LM_PY = Path(os.environ.get("B2TXT_ENV_DIR", REPO / "envs")) / "b2txt25_lm" / "bin" / "python"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LM_PY.is_file(), reason="needs the LM environment (./setup_lm.sh)"),
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """Tiny synthetic data with a 46-trial val split (tiny's train trials, so a run lasts seconds),
    a model trained for a few batches, and a bigram LM folder built from the data's LM corpus."""
    from model_training.rnn_trainer import BrainToTextDecoder_Trainer
    from nejm_b2txt_utils.synthetic import generate
    from nejm_b2txt_utils.t15_hdf5 import T15File, data_file_path, list_sessions, write_trials
    from tests.model_training.conftest import tiny_config

    root = tmp_path_factory.mktemp("e2e")
    generate("tiny", root / "data", seed=1, progress=False)
    hdf5 = root / "data" / "hdf5_data_final"
    model = root / "model"
    trainer = BrainToTextDecoder_Trainer(tiny_config(root / "data", model, num_training_batches=10,
                                                     lr_decay_steps=10, lr_decay_steps_day=10,
                                                     batches_per_val_step=10))
    trainer.train()
    trainer.close()
    eval_dir = root / "eval_data"
    n = 0
    for session in list_sessions(hdf5):
        with T15File(data_file_path(hdf5, session, "train")) as f:
            n += write_trials(data_file_path(eval_dir, session, "val"), list(f))
    lm = root / "lm"
    subprocess.run([str(LM_PY), str(REPO / "language_model" / "build_lm.py"), "--corpus",
                    str(root / "data" / "lm_corpus.txt"), "--order", "2", "--vocab", "corpus", "--out", str(lm)],
                   check=True, capture_output=True)
    return {"root": root, "model": model, "eval_data": eval_dir, "lm": lm, "n_trials": n,
            "csv": root / "data" / "t15_copyTaskData_description.csv"}


def lm_server(p: dict, port: int, log: Path) -> ChildProcess:
    cmd = [LM_PY, REPO / "language_model" / "language-model-standalone.py", "--lm_path", p["lm"],
           "--redis_ip", "127.0.0.1", "--redis_port", port, "--nbest", "10", "--acoustic_scale", "0.325",
           "--blank_penalty", "90",
           # a barely trained model gives flat posteriors: keep the search small so trials take ~0.1 s
           "--beam", "8", "--lattice_beam", "4", "--max_active", "500"]
    return ChildProcess("lm-server", cmd, log).start()


def wait_lm_ready(child: ChildProcess, r) -> None:
    child.wait_ready(lambda: r.xlen("remote_lm_args") > 0, timeout_s=120)


def evaluator(p: dict, port: int, out: Path, timeout: float = 15, retries: int = 8) -> subprocess.Popen:
    cmd = [sys.executable, REPO / "model_training" / "evaluate_model.py", "--model_path", p["model"],
           "--data_dir", p["eval_data"], "--eval_type", "val", "--csv_path", p["csv"], "--gpu_number", "-1",
           "--lm", "redis", "--redis_ip", "127.0.0.1", "--redis_port", port, "--redis_timeout", timeout,
           "--lm_retries", retries, "--out_dir", out, "--results_pkl", out / "results.pkl"]
    out.mkdir(parents=True, exist_ok=True)
    log = open(out.parent / f"{out.name}.log", "wb")  # a file, not a pipe nobody drains while it runs
    proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = Path(log.name)
    return proc


def decoded_ids(out: Path) -> list[str]:
    files = list(out.glob(".eval_partial_val_redis.jsonl"))
    if not files:
        return []
    ids = []
    for line in files[0].read_text().splitlines()[1:]:
        try:
            ids.append(json.loads(line)["id"])
        except json.JSONDecodeError:
            pass  # a line being written right now
    return ids


def wait_for(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc: subprocess.Popen, timeout_s: float = 240) -> str:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.log_path.read_text(errors="replace")[-4000:]


def test_lm_server_killed_mid_evaluation_every_trial_decoded_exactly_once(pipeline, tmp_path):
    with RedisServer() as redis_srv:
        r = redis_srv.client()
        server = lm_server(pipeline, redis_srv.port, tmp_path / "lm1.log")
        try:
            wait_lm_ready(server, r)
            out = tmp_path / "eval"
            proc = evaluator(pipeline, redis_srv.port, out)
            wait_for(lambda: len(decoded_ids(out)) >= 3, 120, "3 decoded trials")
            server.kill()  # SIGKILL mid-evaluation
            done_at_kill = len(decoded_ids(out))
            assert done_at_kill < pipeline["n_trials"], "evaluation finished before the kill; test is void"
            time.sleep(1.0)
            r.delete("remote_lm_args")
            server = lm_server(pipeline, redis_srv.port, tmp_path / "lm2.log")
            wait_lm_ready(server, r)
            log = finish(proc)
            assert proc.returncode == 0, log
        finally:
            server.stop()
    ids = decoded_ids(out)
    assert len(ids) == pipeline["n_trials"] == len(set(ids))  # all, and none twice
    import pickle

    with open(out / "results.pkl", "rb") as fh:
        results = pickle.load(fh)
    assert len(results["pred_sentence"]) == pipeline["n_trials"]
    assert sum(bool(s) for s in results["pred_sentence"]) >= pipeline["n_trials"] // 2


def test_redis_restarted_mid_run_clients_reconnect(pipeline, tmp_path):
    redis_srv = RedisServer().start()
    port = redis_srv.port
    server = lm_server(pipeline, port, tmp_path / "lm.log")
    try:
        r = redis_srv.client()
        wait_lm_ready(server, r)
        out = tmp_path / "eval"
        proc = evaluator(pipeline, port, out)
        wait_for(lambda: len(decoded_ids(out)) >= 3, 120, "3 decoded trials")
        redis_srv.stop()  # both the evaluator and the LM server lose their connection
        time.sleep(1.5)
        redis_srv = RedisServer(port=port).start()
        log = finish(proc)
        assert proc.returncode == 0, log
        assert server.alive, "the LM server died instead of reconnecting:\n" + server.tail()
    finally:
        server.stop()
        redis_srv.stop()
    ids = decoded_ids(out)
    assert len(ids) == pipeline["n_trials"] == len(set(ids))


def test_unreachable_lm_server_gives_a_clear_error_not_a_hang(pipeline, tmp_path):
    with RedisServer() as redis_srv:
        t0 = time.monotonic()
        proc = evaluator(pipeline, redis_srv.port, tmp_path / "eval", timeout=1, retries=1)
        log = finish(proc, timeout_s=60)
        assert proc.returncode == 3
        assert "no answer from the LM server" in log and time.monotonic() - t0 < 60
    # nothing listening at all
    from nejm_b2txt_utils.redis_server import free_port

    proc = evaluator(pipeline, free_port(), tmp_path / "eval2", timeout=1, retries=0)
    log = finish(proc, timeout_s=60)
    assert proc.returncode == 2 and "cannot reach Redis" in log
