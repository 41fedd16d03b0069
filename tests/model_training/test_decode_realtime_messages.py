"""decode_realtime.py: its error lines are written on a line of their own, not onto the sentences bar."""

from __future__ import annotations


def test_decode_realtime_error_lines_are_not_written_onto_its_bar(monkeypatch, capsys):
    import re

    from tqdm import tqdm

    from model_training import decode_realtime
    from nejm_b2txt_utils.cli_errors import ConfigError

    bars = []

    def failing_run(args):
        bars.append(tqdm(desc="sentences", unit="sent"))  # still on screen when the error is printed
        raise ConfigError("--data_dir d: no trials")

    monkeypatch.setattr(decode_realtime, "run", failing_run)
    assert decode_realtime.main(["--model_path", "m", "--source", "hdf5", "--data_dir", "d"]) == 2
    bars[0].close()
    assert "error: --data_dir d: no trials" in re.split(r"[\r\n]", capsys.readouterr().err)
