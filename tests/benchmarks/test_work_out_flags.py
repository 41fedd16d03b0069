"""Benchmarks with a --work folder refuse a file there before any work (one line, exit 2; was a
NotADirectoryError traceback once the first file was written)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["benchmarks.lm_decode_latency", "benchmarks.lm_finalize_bound",
                                    "benchmarks.tlg_build", "benchmarks.recipes", "benchmarks.lm_scale",
                                    "benchmarks.lm_server_load", "benchmarks.realtime_latency", "benchmarks.xla_steps"])
def test_a_file_as_work_is_one_line_before_any_work(module, tmp_path, capsys):
    main = importlib.import_module(module).main
    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert main(["--work", str(afile)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --work {afile}: is a file, not a folder; expected a folder (created if missing)")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"] and afile.read_text() == "keep"


@pytest.mark.parametrize("module", ["benchmarks.lm_scale", "benchmarks.calibration", "benchmarks.decoder_vs_peer"])
def test_a_folder_as_out_is_one_line_before_any_work(module, tmp_path, capsys):
    """New-user case: ``benchmarks.calibration --out /etc`` generated data and trained for 25 minutes before the
    result could not be written."""
    main = importlib.import_module(module).main
    assert main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: --out {tmp_path}: is a folder; expected a file path"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flags", "expected"), [
    (["--sizes", "inf"], "--sizes: expected comma-separated numbers >= 1000 (token counts), got 'inf'"),
    (["--sizes", "1e4,-5"], "--sizes: expected comma-separated numbers >= 1000 (token counts), got '-5'"),
    (["--orders", "2.5"], "--orders: expected comma-separated integers >= 2 (n-gram orders), got '2.5'"),
    (["--first_pass_ngrams", "nan"], "--first_pass_ngrams: expected a number >= 1, got nan"),
    (["--single_max_ngrams", "-1"], "--single_max_ngrams: expected a number >= 0, got -1"),
])
def test_lm_scale_names_the_flag_and_the_value(flags, expected, capsys):
    """New-user cases: ``--sizes inf`` was an OverflowError traceback, ``--first_pass_ngrams nan`` one after the
    corpus was written, and every range error was the same line naming four flags."""
    from benchmarks.lm_scale import main

    assert main(flags) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"


def test_calibration_refuses_zero_sentences_before_any_work(capsys):
    from benchmarks.calibration import main

    assert main(["--ns", "0,10"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --ns: expected sentence counts >= 1, got 0"
