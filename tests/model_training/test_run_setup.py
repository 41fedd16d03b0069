"""run_setup: the trainer's log lines reach a redirected stdout as they are logged, not at exit."""

import os
import subprocess
import sys
import textwrap


def test_log_lines_reach_a_redirected_stdout_before_exit(tmp_path):
    """Issue case: with stdout redirected (nohup, slurm) the trainer's log lines appeared only at exit."""
    log_file = tmp_path / "out.txt"
    code = textwrap.dedent(f"""
        import time
        from model_training.run_setup import setup_logging
        log = setup_logging("trainer_test", {{"mode": "eval", "output_dir": {str(tmp_path)!r}}}, True)
        log.info("first line")
        time.sleep(0.2)
        print("len_after_log", len(open({str(log_file)!r}).read()), file=__import__("sys").stderr)
        time.sleep(30)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered, as under nohup
    with open(log_file, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.PIPE, text=True,
                                env=env)
        try:
            line = proc.stderr.readline()
        finally:
            proc.kill()
            proc.wait()
    assert line.startswith("len_after_log"), line
    assert int(line.split()[1]) > len("first line"), line  # the line is in the file while the process runs
