"""The command-line entry points: make_figures (all panels) and synthetic_pkl (the generators)."""

from __future__ import annotations

from analyses import copy_task as ct
from analyses import make_figures, synthetic_pkl
from analyses import personal_use as pu
from analyses.pkl_io import write_pickle


def test_make_figures_writes_every_panel(copy_task_pkl, personal_use_pkl, tmp_path, capsys):
    out = tmp_path / "figs"
    assert make_figures.main(["--copy_task", str(copy_task_pkl), "--personal_use", str(personal_use_pkl),
                              "--out", str(out), "--trial", "5"]) == 0
    names = {p.stem for p in out.iterdir()}
    assert names == {"figure2_example_logit_traces", "figure2_example_logits", "figure2_example_probabilities",
                     "figure2_error_rates", "figure4a_cumulative_use", "figure4b_correctness",
                     "figure4c_daily_breakdown"}
    assert len(list(out.glob("*.png"))) == len(list(out.glob("*.pdf"))) == 7
    printed = capsys.readouterr().out
    data = ct.load_copy_task(copy_task_pkl)
    assert ct.format_rates_table(ct.error_rates_by_day(data)) in printed
    assert ct.example_trial_text(data, 5) in printed
    assert pu.format_summary(pu.load_personal_use(personal_use_pkl)) in printed


def test_make_figures_reports_a_bad_pickle_in_one_line(tmp_path, capsys):
    bad = write_pickle({"trialized_info": {}}, tmp_path / "t15_personalUse.pkl")
    assert make_figures.main(["--personal_use", str(bad), "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing key 'total_use_time'" in err and str(bad) in err


def test_synthetic_pkl_cli(tmp_path):
    ct_path, pu_path = tmp_path / "ct.pkl", tmp_path / "pu.pkl"
    assert synthetic_pkl.main(["--copy_task", str(ct_path), "--personal_use", str(pu_path), "--seed", "4",
                               "--trials_per_group", "2"]) == 0
    data = ct.load_copy_task(ct_path)
    assert len(data["cue_sentence"]) == 32 and data["synthetic"] is True
    assert pu.load_personal_use(pu_path)["synthetic"] is True
