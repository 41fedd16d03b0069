"""README command #1 in its --quick form: every stage runs, the table and the outputs appear, and a
re-run reuses what exists."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LM_PY = Path(os.environ.get("B2TXT_ENV_DIR", REPO / "envs")) / "b2txt25_lm" / "bin" / "python"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not LM_PY.is_file(), reason="needs the LM environment (./setup_lm.sh)")]


def run_demo(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "end_to_end.run_demo", "--quick", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1500)


def test_quick_demo_end_to_end_and_rerun_reuses(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    table = first.stdout[first.stdout.index("corpus"):]
    for col in ("PER greedy %", "WER n-gram %", "WER n-gram+LLM %"):
        assert col in table
    all_row = next(line for line in table.splitlines() if line.startswith("all"))
    n_trials = int(all_row.split()[1])
    assert n_trials > 0
    report = json.loads((out / "report.json").read_text())
    overall = next(r for r in report["rows"] if r["corpus"] == "all")
    assert 0.0 <= overall["PER_greedy"] < 1.5 and 0.0 <= overall["WER_ngram_llm"]
    # the mixed LM and the tuned weights: tuned on the even val trials, reported on the odd ones only
    assert "interpolated with the wordfreq 1-gram" in first.stdout
    tuned = json.loads((out / "lm_params.json").read_text())
    assert tuned["dev_trials"] == "even" and tuned["n_dev_trials"] == (n_trials + 1) // 2
    assert f"acoustic_scale={tuned['params']['acoustic_scale']}" in first.stdout
    held = next(r for r in report["held_out_rows"] if r["corpus"] == "all")
    assert held["trials"] == n_trials // 2
    for col in ("WER_ngram_documented", "WER_ngram_tuned", "WER_ngram_llm_documented", "WER_ngram_llm_tuned"):
        assert 0.0 <= held[col] < 5.0
    assert (out / "eval_tuned" / "results.pkl").is_file()
    with open(next((out / "eval").glob("baseline_rnn_val_predicted_sentences_*.csv"))) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "text"] and [r[0] for r in rows[1:]] == [str(i) for i in range(n_trials)]
    assert (out / "figures" / "figure2_error_rates.png").stat().st_size > 1000
    assert (out / "figures" / "figure2_error_rates.pdf").is_file()
    # no process left behind: the LM server and redis-server of this run are gone
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps
    # the performance report takes its end-to-end rows (wall time, peak RSS per process) from this run
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    report_run = subprocess.run([sys.executable, "-m", "benchmarks.report", "--demo_dir", str(out),
                                 "--out", str(tmp_path / "perf"), "--data_dir", str(out / "data"), "--skip",
                                 "train_throughput", "stream_latency", "tlg_build", "lm_decode_latency",
                                 "lm_server_load", "lm_scale", "xla_steps", "tf_vs_torch", "realtime_latency"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert report_run.returncode == 0, report_run.stderr[-3000:]
    perf = json.loads((tmp_path / "perf" / "report.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    assert perf["demo"]["mode"] == "quick" and perf["demo"]["timings"] == timings
    e2e = [line for line in (tmp_path / "perf" / "report.md").read_text().splitlines() if "| end to end |" in line]
    assert any("quick: total wall time" in line for line in e2e)
    peaks = {line.split("|")[2].strip(): line.split("|")[4].strip() for line in e2e}
    for process in ("quick: lm-server", "quick: redis-server"):
        assert float(peaks[process]) > 1  # MB, measured while the process ran

    second = run_demo(out)
    assert second.returncode == 0
    assert second.stdout.count("already done") + second.stderr.count("already done") >= 7

    # a re-run that reused everything keeps the measurements of the run that did the work
    assert json.loads((out / "timings.json").read_text()) == timings

    # the tuned weights changed (or the file broke): the held-out block is not built from stale results
    params = json.loads((out / "lm_params.json").read_text())
    params["params"]["blank_penalty"] = 90.0 if params["params"]["blank_penalty"] != 90.0 else 9.0
    (out / "lm_params.json").write_text(json.dumps(params))
    third = run_demo(out)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "was decoded with other weights" in third.stderr and "[eval_lm_tuned] " in third.stderr
    assert (out / "eval_tuned" / "lm_params_used.json").read_text() == (out / "lm_params.json").read_text()
    (out / "lm_params.json").write_text("{")
    fourth = run_demo(out)
    assert fourth.returncode == 0 and "unreadable" in fourth.stderr and "Traceback" not in fourth.stderr
    assert json.loads((out / "lm_params.json").read_text())["dev_trials"] == "even"
