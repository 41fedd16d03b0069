"""benchmarks/report.py: every benchmark runs in its own environment, the JSON and the markdown table hold
real measurements, and a re-run reuses the parts already measured."""

from __future__ import annotations

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


def run_report(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "benchmarks.report", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_quick_report_measures_every_benchmark_and_resumes(tmp_path):
    from nejm_b2txt_utils.synthetic import generate

    data = tmp_path / "data"
    generate("tiny", data, seed=0, progress=False)
    out = tmp_path / "report"
    args = ["--quick", "--data_dir", str(data), "--out", str(out), "--skip", "demo", "lm_server_load", "lm_scale", "xla_steps", "tf_vs_torch",
            "--train_overrides", "dataset.days_per_batch=2"]  # tiny has 3 sessions, the small config draws 4
    first = run_report(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    train = report["train_throughput"]["results"]
    assert [r["config"] for r in train] == ["small", "nnn_small"]  # the adversarial model next to its peer
    assert train[0]["steps_per_s"] > 0 and train[0]["timed_steps"] == 3 and train[0]["peak_rss_mb"] > 50
    assert train[0]["peak_rss_workers_mb"] > 50  # the small config's data worker, reaped before it is read
    assert train[1]["params"] > train[0]["params"] / 2 and train[1]["gru"].startswith("noise 2x512")
    ratios = report["train_throughput"]["ratios"]
    assert ratios["nnn_small_over_small_steps_per_s"] == round(train[1]["steps_per_s"] / train[0]["steps_per_s"], 3)
    stream = report["stream_latency"]["results"][0]
    assert stream["frames"] == 30 and 0 < stream["ms_per_frame_p50"] <= stream["ms_per_frame_p95"]
    tlg = report["tlg_build"]
    assert tlg["unigram_wordfreq"]["vocabulary"] > 100_000 and tlg["trigram"]["tlg_states"] > 0
    lm = report["lm_decode_latency"]
    assert lm["n_sentences"] == 3 and lm["1gram"]["ngram"]["finalize"]["n"] == 3
    assert "ngram_llm" not in lm["1gram"]  # --quick leaves the causal LM out
    for name in ("train_throughput", "stream_latency", "tlg_build", "lm_decode_latency"):
        assert report["benchmark_process_peak_rss_mb"][name] > 10

    table = (out / "report.md").read_text()
    assert table.splitlines()[2] == "| area | what | value | peak RSS (MB) |"
    areas = {line.split("|")[1].strip() for line in table.splitlines()[4:] if line.startswith("|")}
    assert areas == {"training", "streaming", "LM decode", "TLG build"}
    assert table in first.stdout

    parts = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.json")}
    assert len(parts) == 4
    second = run_report(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.json")} == parts
    assert json.loads((out / "report.json").read_text())["train_throughput"] == report["train_throughput"]


def test_failed_benchmark_names_itself_and_its_error(tmp_path):
    from nejm_b2txt_utils.synthetic import generate

    generate("tiny", tmp_path / "data", seed=0, progress=False)
    result = run_report("--quick", "--data_dir", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--skip",
                        "stream_latency", "tlg_build", "lm_decode_latency", "lm_server_load", "lm_scale", "xla_steps", "tf_vs_torch",
                        "demo")  # days_per_batch 4 > 3 days
    assert result.returncode == 1
    assert "step 'train_throughput' failed" in result.stderr
    assert "days_per_batch (4) exceeds the 3 days with data" in result.stderr
    assert not (tmp_path / "r" / "parts" / "train_throughput.json").exists()


def test_missing_data_is_a_one_line_error(tmp_path):
    result = run_report("--quick", "--data_dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"),
                        "--skip", "stream_latency", "tlg_build", "lm_decode_latency", "lm_server_load", "lm_scale", "xla_steps", "demo")
    assert result.returncode == 2
    assert f"{tmp_path / 'nowhere'}: no hdf5_data_final/ folder" in result.stderr
    assert not (tmp_path / "r" / "report.json").exists()


@pytest.mark.parametrize(("flags", "expected"), [
    (["--demo_dir", "no/such/run"], "--demo_dir no/such/run: no timings.json there"),
    (["--demo_dir", "tests"], "--demo_dir tests: no timings.json there"),
    (["--lm_sentences", "0"], "--lm_sentences: expected a number >= 1, got 0"),
    (["--train_overrides", "lr_max"], "--train_overrides: expected key=value, got lr_max"),
])
def test_bad_flags_fail_before_any_benchmark_runs(tmp_path, flags, expected):
    """These were found only after minutes of benchmarks (or, for --demo_dir, never: an empty report, exit 0)."""
    if flags[0] == "--demo_dir" and flags[1] == "tests":  # a folder whose timings.json is not run_demo's
        (tmp_path / "demo").mkdir()
        (tmp_path / "demo" / "timings.json").write_text("[1]")
        flags, expected = ["--demo_dir", str(tmp_path / "demo")], f"--demo_dir {tmp_path / 'demo'}: timings.json is not"
    proc = run_report("--out", str(tmp_path / "out"), *flags)
    assert proc.returncode == 2
    assert expected in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()  # nothing generated, nothing measured
