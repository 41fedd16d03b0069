"""The LM parameter table: defaults, ranges (int32, finite), update messages, the flags derived from it."""

import argparse
import math

import pytest

from nejm_b2txt_utils.lm_params import (
    INT32_MAX,
    PARAMS,
    UPDATABLE_PARAMS,
    LMParamError,
    LMParams,
    add_arguments,
)


def test_the_original_fourteen_with_their_defaults():
    assert UPDATABLE_PARAMS == ("max_active", "min_active", "beam", "lattice_beam", "acoustic_scale",
                                "ctc_blank_skip_threshold", "length_penalty", "nbest", "blank_penalty", "alpha",
                                "do_opt", "rescore", "top_candidates_to_augment", "score_penalty_percent")
    args = LMParams().redis_args("/lm")
    assert args == {"lm_path": "/lm", "max_active": 7000, "min_active": 200, "beam": 17.0, "lattice_beam": 8.0,
                    "acoustic_scale": 0.3, "ctc_blank_skip_threshold": 1.0, "length_penalty": 0.0, "nbest": 100,
                    "blank_penalty": 9.0, "alpha": 0.5, "do_opt": 0, "rescore": 0, "top_candidates_to_augment": 20,
                    "score_penalty_percent": 0.01}
    assert LMParams().lattice_pass_margin == 5.0 and "lattice_pass_margin" not in args


@pytest.mark.parametrize("field, value, expected", [
    ("max_active", 10**12, r"max_active=1000000000000: expected a whole number in \[2, 2147483647\]"),
    ("max_active", INT32_MAX + 1, "max_active"),
    ("nbest", 2.5, "nbest=2.5: expected a whole number"),
    ("acoustic_scale", math.inf, r"acoustic_scale=inf: expected a finite number in \(0, inf\)"),
    ("beam", math.nan, "beam=nan"),
    ("beam", 0.0, r"beam=0.0: expected a finite number in \(0, 1000\]"),
    ("lattice_beam", 1e39, r"lattice_beam=1e\+39: expected a finite number in \(0, 20\]"),  # inf as float32: segfault
    ("alpha", 1.5, r"alpha=1.5: expected a finite number in \[0, 1\]"),
    ("do_opt", 2, r"do_opt=2: expected a whole number in \[0, 1\]"),
    ("legacy", "maybe", "legacy='maybe': expected one of auto, on, off"),
])
def test_out_of_range_values_are_refused_naming_field_range_and_value(field, value, expected):
    with pytest.raises(LMParamError, match=expected):
        LMParams(**{field: value})


def test_min_active_above_max_active_is_refused():
    with pytest.raises(LMParamError, match=r"min_active=300: expected < max_active \(250\)"):
        LMParams(max_active=250, min_active=300)
    with pytest.raises(LMParamError, match=r"min_active=250: expected < max_active \(250\)"):
        LMParams(max_active=250, min_active=250)  # Kaldi's FasterDecoder aborts on equal values (found by fuzzing)


def test_update_messages_apply_all_or_nothing():
    p = LMParams(acoustic_scale=0.325)
    new = p.updated({b"nbest": b"5", b"do_opt": b"1", b"alpha": b"0.55"})
    assert (new.nbest, new.do_opt, new.alpha, new.acoustic_scale) == (5, 1, 0.55, 0.325)
    assert p.nbest == 100  # the original object is unchanged
    for entry, msg in [({b"max_active": b"1e12"}, "update_params: max_active='1e12'"),
                       ({b"acoustic_scale": b"inf"}, "update_params: acoustic_scale='inf'"),
                       ({b"nbest": b"abc"}, "update_params: nbest='abc'"),
                       ({b"nbest": b"5", b"acoustic_scal": b"0.3"}, r"unknown field\(s\) \['acoustic_scal'\]"),
                       ({b"num_workers": b"4"}, r"unknown field\(s\) \['num_workers'\]"),  # start-up only
                       ({b"min_active": b"8000"}, "min_active=8000: expected < max_active")]:
        with pytest.raises(LMParamError, match=msg):
            p.updated(entry)
    assert p.updated({b"utt_id": b"x", b"beam": b"12"}, allowed_extra=("utt_id",)).beam == 12.0


def test_flags_come_from_the_table():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags == {p.name for p in PARAMS}
    args = parser.parse_args(["--beam", "12", "--do_opt", "--max_active", "500"])
    params = LMParams.from_namespace(args)
    assert (params.beam, params.do_opt, params.rescore, params.max_active, params.nbest) == (12.0, 1, 0, 500, 100)
    with pytest.raises(LMParamError, match="max_active='1e12'"):
        LMParams.from_namespace(parser.parse_args(["--max_active", "1e12"]))


@pytest.mark.parametrize(("values", "expected"), [
    ({"nbest": True}, "nbest=true: expected a JSON number"),
    ({"acoustic_scale": "0.5"}, "acoustic_scale=\"0.5\": expected a JSON number"),
    ({"params": {"beam": None}}, "beam=null: expected a JSON number"),
    ({"llm_scoring": 1}, "llm_scoring=1: expected a JSON string"),
])
def test_a_params_file_value_of_the_wrong_json_type_is_refused(tmp_path, values, expected):
    """Reported by a tryout: {"nbest": true} started a server with nbest 1, "0.5" was read as 0.5."""
    from nejm_b2txt_utils.lm_params import load_params_file

    path = tmp_path / "p.json"
    path.write_text(__import__("json").dumps(values))
    with pytest.raises(LMParamError) as exc:
        load_params_file(path)
    assert str(exc.value).startswith(f"params file {path}: {expected}")
    path.write_text('{"params": {"nbest": 50, "acoustic_scale": 0.5, "llm_scoring": "batch"}}')
    assert load_params_file(path) == {"nbest": 50, "acoustic_scale": 0.5, "llm_scoring": "batch"}
