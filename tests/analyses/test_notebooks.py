"""Both notebooks run headless (nbclient, this interpreter's ipykernel) on synthetic pickles: the figures
exist as PNG + PDF with TrueType fonts, and the numbers they print equal what the modules compute."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analyses import copy_task as ct
from analyses import personal_use as pu

ANALYSES_DIR = Path(__file__).resolve().parents[2] / "analyses"
KERNEL = "b2txt-analyses-test"
FIGURE_2 = ("figure2_example_logit_traces", "figure2_example_logits", "figure2_example_probabilities",
            "figure2_error_rates")
FIGURE_4 = ("figure4a_cumulative_use", "figure4b_correctness", "figure4c_daily_breakdown")


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory) -> Path:
    """A kernelspec that starts ipykernel with the interpreter running the tests."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "b2txt tests", "language": "python"}))
    return root


def run_notebook(path: Path, cwd: Path, kernel_env: Path, monkeypatch, env: dict[str, str]) -> str:
    """Execute ``path`` in ``cwd`` with ``env`` set; returns everything it printed to stdout."""
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    for key in ("B2TXT_COPYTASK_PKL", "B2TXT_PERSONALUSE_PKL", "B2TXT_FIGURE_DIR", "B2TXT_EXAMPLE_TRIAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} is committed with outputs"
    NotebookClient(nb, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def assert_figures(fig_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        png, pdf = fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        data = pdf.read_bytes()
        assert data[:5] == b"%PDF-", pdf
        assert b"/FontFile2" in data and b"/Type3" not in data, f"{pdf}: fonts not embedded as TrueType"


def parse_rates_table(text: str) -> list[tuple]:
    """Rows of the printed per-day table: (day, vocab, trials, rPER, lo, hi, WER, lo, hi)."""
    lines = text.splitlines()
    start = lines.index(ct.TABLE_HEADER) + 1
    rows = []
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 9 or not re.fullmatch(r"\d+", parts[0]):
            break
        rows.append((int(parts[0]), int(parts[1]), int(parts[2]), *map(float, parts[3:])))
    return rows


def test_figure_2_notebook(copy_task_pkl, kernel_env, monkeypatch, tmp_path):
    fig_dir = tmp_path / "figures"
    out = run_notebook(ANALYSES_DIR / "figure_2.ipynb", ANALYSES_DIR, kernel_env, monkeypatch,
                       {"B2TXT_COPYTASK_PKL": str(copy_task_pkl), "B2TXT_FIGURE_DIR": str(fig_dir)})
    assert_figures(fig_dir, FIGURE_2)

    data = ct.load_copy_task(copy_task_pkl)
    expected = ct.error_rates_by_day(data)
    printed = parse_rates_table(out)
    assert len(printed) == len(expected) == 16
    for row, exp in zip(printed, expected):
        assert row[:3] == (exp.day, exp.vocab_size, exp.n_trials)
        values = (exp.rper.rate, exp.rper.ci_low, exp.rper.ci_high, exp.wer.rate, exp.wer.ci_low, exp.wer.ci_high)
        assert row[3:] == tuple(round(100 * v, 2) for v in values), (row, exp)
    # 128 trials: the preferred example trial 500 does not exist, the middle one is shown
    assert ct.example_trial_text(data, 64) in out
    assert "(synthetic data)" in out


def test_figure_4_notebook(personal_use_pkl, kernel_env, monkeypatch, tmp_path):
    fig_dir = tmp_path / "figures"
    out = run_notebook(ANALYSES_DIR / "figure_4.ipynb", ANALYSES_DIR, kernel_env, monkeypatch,
                       {"B2TXT_PERSONALUSE_PKL": str(personal_use_pkl), "B2TXT_FIGURE_DIR": str(fig_dir)})
    assert_figures(fig_dir, FIGURE_4)

    data = pu.load_personal_use(personal_use_pkl)
    summary, use = pu.rating_summary(data), pu.cumulative_use(data)
    m = re.search(r"Total use: ([\d.]+) hours, (\d+) sentences, (\d+) days", out)
    assert m and float(m[1]) == round(float(use.hours[-1]), 2)
    assert (int(m[2]), int(m[3])) == (int(use.sentences[-1]), use.days.size)
    assert int(re.search(r"Rated sentences: (\d+)", out)[1]) == summary.total > 0
    for label, count, pct in zip(summary.labels, summary.counts, summary.percents):
        m = re.search(rf"{re.escape(label)}: (\d+) \(([\d.]+)%\)", out)
        assert m and int(m[1]) == count and float(m[2]) == round(pct, 1)


def test_notebook_falls_back_to_synthetic_data_on_a_fresh_clone(kernel_env, monkeypatch, tmp_path):
    """No ../data/t15_personalUse.pkl next to the notebook and no variable set: synthetic data, said so."""
    nb_dir = tmp_path / "analyses"
    nb_dir.mkdir()
    shutil.copy(ANALYSES_DIR / "figure_4.ipynb", nb_dir)
    out = run_notebook(nb_dir / "figure_4.ipynb", nb_dir, kernel_env, monkeypatch, {})
    assert "not found: drawing the figures from SYNTHETIC data" in out
    assert "(synthetic data)" in out
    assert_figures(nb_dir / "figures", FIGURE_4)  # the default output folder, next to the notebook


def test_notebook_names_the_missing_key(tmp_path, kernel_env, monkeypatch):
    from analyses.pkl_io import write_pickle

    bad = write_pickle({"cue_sentence": ["a"]}, tmp_path / "bad.pkl")
    with pytest.raises(Exception, match="missing key 'cue_sentence_phonemes'"):
        run_notebook(ANALYSES_DIR / "figure_2.ipynb", ANALYSES_DIR, kernel_env, monkeypatch,
                     {"B2TXT_COPYTASK_PKL": str(bad), "B2TXT_FIGURE_DIR": str(tmp_path / "f")})
