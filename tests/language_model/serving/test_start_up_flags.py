"""Every numeric or choice flag of the LM server, given a bad value, is one line on stderr and exit 2 (issue 13
case 1: ``--max_active 3000000000`` printed a traceback)."""

from __future__ import annotations

import pytest

pytest.importorskip("kaldifst")

from language_model.serving.args import parse_args  # noqa: E402
from nejm_b2txt_utils.lm_params import PARAMS  # noqa: E402

UNIVERSAL = ["inf", "-inf", "nan", "abc", "", "1e400", "0x10"]


def _bad_values(p) -> list[str]:
    if p.choices:
        return ["maybe", ""]
    if p.switch:
        return []  # store_true: takes no value
    values = list(UNIVERSAL)
    if p.type is int:
        values += ["3000000000", "-3000000000", "2.5"]
    if p.low is not None:
        values.append(str(p.low - 1))
    if p.high is not None:
        values.append(str(p.high + 1))
    return values


CASES = [(p.name, v) for p in PARAMS for v in _bad_values(p)]


@pytest.mark.parametrize(("name", "value"), CASES)
def test_bad_flag_value_is_one_line_and_exit_2(capsys, name, value):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--lm_path", "/nonexistent", f"--{name}={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--{name}" in err[0] and "Traceback" not in err[0], err


def test_the_issue_case_and_the_cross_check(capsys):
    assert len(CASES) > 150
    with pytest.raises(SystemExit) as exc:
        parse_args(["--lm_path", "x", "--max_active", "3000000000"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("language-model-standalone.py: error: --max_active='3000000000': "
                                       "expected a whole number in [2, 2147483647]\n")
    with pytest.raises(SystemExit):  # min_active (default 200) must stay below max_active
        parse_args(["--lm_path", "x", "--max_active", "200"])
    args = parse_args(["--lm_path", "x", "--max_active", "2147483647", "--min_active", "0"])
    assert (args.max_active, args.min_active) == (2147483647, 0)
