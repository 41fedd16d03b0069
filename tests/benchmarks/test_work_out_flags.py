"""Benchmarks with a --work folder refuse a file there before any work (one line, exit 2; was a
NotADirectoryError traceback once the first file was written)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["benchmarks.lm_decode_latency", "benchmarks.lm_finalize_bound",
                                    "benchmarks.tlg_build", "benchmarks.recipes"])
def test_a_file_as_work_is_one_line_before_any_work(module, tmp_path, capsys):
    main = importlib.import_module(module).main
    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert main(["--work", str(afile)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --work {afile}: is a file, not a folder; expected a folder (created if missing)")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"] and afile.read_text() == "keep"
