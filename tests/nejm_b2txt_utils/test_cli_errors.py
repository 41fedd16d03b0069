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



def test_sigterm_runs_the_clean_ups_and_is_one_line(tmp_path):
    """New-user case: ``timeout 90 python -m benchmarks.calibration ...`` left its 699 MB temporary folder (SIGTERM
    ended the process before ``TemporaryDirectory`` could remove it)."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "job.py"
    script.write_text(
        "import sys, tempfile, time\n"
        "from nejm_b2txt_utils.cli_errors import exit_2_on_bad_input\n"
        "@exit_2_on_bad_input()\n"
        "def main():\n"
        "    with tempfile.TemporaryDirectory(dir=sys.argv[1]) as tmp:\n"
        "        open(tmp + '/big.bin', 'wb').write(b'x' * 1000)\n"
        "        print(tmp, flush=True)\n"
        "        time.sleep(60)\n"
        "    return 0\n"
        "sys.exit(main())\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, str(script), str(scratch)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=repo, env={"PYTHONPATH": str(repo)})
    made = Path(proc.stdout.readline().strip())
    assert made.is_dir() and made.parent == scratch
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED and time.monotonic() - t0 < 10
    assert err.strip().splitlines()[-1] == "interrupted (SIGTERM); nothing half-written was kept"
    assert "Traceback" not in err and not list(scratch.iterdir())  # the temporary folder is gone


def test_a_handler_someone_installed_is_left_alone():
    import signal

    from nejm_b2txt_utils.cli_errors import sigterm_as_interrupt

    def mine(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, mine)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, mine)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
