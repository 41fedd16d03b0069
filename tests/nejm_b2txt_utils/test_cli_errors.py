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
