"""Entry scripts' error exits: bad input is one line and exit 2, Ctrl-C one line and exit 130 (no traceback)."""

from nejm_b2txt_utils.cli_errors import EXIT_INTERRUPTED, ConfigError, exit_2_on_bad_input


def test_bad_input_and_ctrl_c_are_one_line(capsys):
    @exit_2_on_bad_input(FileNotFoundError)
    def main(what: str) -> int:
        if what == "missing":
            raise FileNotFoundError("x.arpa: not found")
        if what == "bad":
            raise ConfigError("--order: expected an integer >= 1,\n got 0")
        raise KeyboardInterrupt

    assert main("missing") == 2 and capsys.readouterr().err == "error: x.arpa: not found\n"
    assert main("bad") == 2 and capsys.readouterr().err == "error: --order: expected an integer >= 1, got 0\n"
    # new-user case: convert_lm.py, calibrate_model.py and build_lm.py ended in a KeyboardInterrupt traceback
    assert main("ctrl-c") == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C); nothing half-written was kept\n"


def test_error_line_is_not_written_onto_an_open_progress_bar(capsys):
    """New-user case: ``sentences: 0sent [00:00, ?sent/s]error: ...`` (the line printed at the end of the bar's)."""
    import re

    from tqdm import tqdm

    from nejm_b2txt_utils.cli_errors import ConfigError, print_bad_input

    bar = tqdm(desc="sentences", unit="sent")  # writes to the captured stderr
    assert print_bad_input(ConfigError("--out x: is a folder")) == 2
    bar.close()
    segments = re.split(r"[\r\n]", capsys.readouterr().err)
    assert "error: --out x: is a folder" in segments  # a line of its own (the bar cleared, then redrawn)
    assert not any("sent/s]error" in s for s in segments)

