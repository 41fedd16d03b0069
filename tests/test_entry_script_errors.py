"""Issue 13 case 7, the kind: a bad flag of any entry script is one line on stderr and exit 2, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cmd,message", [
    (["model_training/evaluate_model.py", "--redis_timeout", "-1"], "--redis_timeout: expected seconds > 0, got -1.0"),
    (["model_training/evaluate_model.py", "--lm_retries", "-2"], "--lm_retries: expected an integer >= 0, got -2"),
    (["model_training/train_model.py", "dataset.batch_size=0"], "dataset.batch_size: expected an integer >= 1, got 0"),
    (["-m", "nejm_b2txt_utils.synthetic", "--out", "{tmp}", "--max_sessions", "0"],
     "sessions: expected a positive number, got 0"),
    (["download_data.py", "--timeout", "0"], "--timeout: expected seconds > 0, got 0.0"),
    (["-m", "benchmarks.stream_latency", "--device", "gpu7"], "device 'gpu7': expected cpu, cuda, cuda:N or auto"),
    (["-m", "benchmarks.train_throughput", "--data_dir", "{tmp}", "--steps", "0"],
     "--steps: expected a number >= 1, got 0"),
    (["-m", "benchmarks.synthetic_learnability", "--variants", "maybe"], "--variants: expected a comma list"),
    (["-m", "end_to_end.run_demo", "--seed", "-1"], "--seed: expected a number >= 0, got -1"),
    (["-m", "end_to_end.run_demo", "--realtime", "-3"], "--realtime: expected a number >= 0, got -3"),
    (["model_training/decode_realtime.py", "--silence_prob", "1.5"], "--silence_prob: expected 0 < p <= 1, got 1.5"),
    (["model_training/decode_realtime.py", "--speed", "-1"], "--speed: expected a number >= 0, got -1.0"),
    (["-m", "benchmarks.realtime_latency", "--trials", "0"], "--trials: expected a number >= 1, got 0"),
    (["-m", "benchmarks.realtime_latency", "--beside", "recalibration"], "--beside recalibration: needs --model_path"),
    (["model_training/recalibrate_online.py", "--model_path", "m", "--session", "s", "--out", "{tmp}/o",
      "--min_sentences", "0"], "--min_sentences: expected a number >= 1, got 0"),
])
def test_bad_flag_is_one_line_and_exit_2(cmd, message, tmp_path):
    cmd = [c.replace("{tmp}", str(tmp_path)) for c in cmd]
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: "), proc.stderr
    assert message in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written before the check
