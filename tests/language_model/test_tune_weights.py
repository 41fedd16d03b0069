"""tune_weights.py: a grid over saved logits in worker processes, the best combination as a params file that the
server's flags and the evaluator read."""

from __future__ import annotations

import json
import pickle

import pytest

pytest.importorskip("kaldi_decoder")

from language_model import tune_weights  # noqa: E402
from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from language_model.serving.args import parse_args  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParamError, load_params_file  # noqa: E402

SENTS = ["i need water", "please help me", "i want to go home", "open the door", "i need some water",
         "you need water"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    lm = build_toy_lm(d / "lm")
    pkl = d / "results.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"logits": [synthetic_logits(s, seed=i, peak=4.0) for i, s in enumerate(SENTS)],
                     "sentence_label": SENTS}, f)
    return d, lm, pkl


def test_grid_picks_the_lowest_dev_wer_and_writes_a_params_file(setup, capsys):
    d, lm, pkl = setup
    out = d / "params.json"
    assert tune_weights.main(["--results_pkl", str(pkl), "--lm_path", str(lm), "--trials", "0:4", "--out", str(out),
                              "--workers", "2", "--acoustic_scale", "0.01", "1.0", "--blank_penalty", "1", "90",
                              "--alpha", "0.4", "--report_trials", "4:"]) == 0
    info = json.loads(out.read_text())
    wers = [r["wer"] for r in info["results"]]
    assert len(wers) == 4 and info["dev_wer"] == min(wers) and info["n_dev_trials"] == 4
    # at acoustic scale 0.01 the toy LM outvotes the acoustics: clearly worse than at 1.0
    by = {(r["acoustic_scale"], r["blank_penalty"]): r["wer"] for r in info["results"]}
    assert min(by[(0.01, 1.0)], by[(0.01, 90.0)]) > info["dev_wer"]
    assert info["params"]["acoustic_scale"] == 1.0 and info["params"]["alpha"] == 0.4
    assert info["report"]["n_trials"] == 2 and 0 <= info["report"]["wer_tuned"] <= 1
    assert "held-out 2 trials" in capsys.readouterr().out
    # the server's flags take the file's values as defaults; a flag on the command line still wins
    args = parse_args(["--lm_path", str(lm), "--params_file", str(out)])
    assert args.acoustic_scale == 1.0 and args.alpha == 0.4 and args.beam_acoustic_scale == 0.325
    assert parse_args(["--lm_path", str(lm), "--params_file", str(out), "--alpha", "0.7"]).alpha == 0.7
    assert load_params_file(out)["blank_penalty"] == info["params"]["blank_penalty"]


def test_bad_inputs_are_one_line_errors(setup, tmp_path, capsys):
    d, lm, pkl = setup
    assert tune_weights.main(["--results_pkl", str(pkl), "--lm_path", str(lm), "--trials", "9:12", "--out",
                              str(tmp_path / "p.json")]) == 2
    assert "selects no trial" in capsys.readouterr().err
    assert tune_weights.main(["--results_pkl", str(pkl), "--lm_path", str(lm), "--trials", "0:4", "--report_trials",
                              "3:", "--out", str(tmp_path / "p.json")]) == 2
    assert "overlaps" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"params": {"acoustic_scale": -1}}))
    with pytest.raises(LMParamError, match="acoustic_scale"):
        load_params_file(bad)
    bad.write_text(json.dumps({"acoustic_scal": 1}))
    with pytest.raises(SystemExit) as exc:
        parse_args(["--lm_path", str(lm), "--params_file", str(bad)])
    assert exc.value.code == 2 and "unknown parameter" in capsys.readouterr().err


@pytest.mark.parametrize("content, expected", [
    (b"\x80\x04\x95", "UnpicklingError"),          # truncated pickle
    (b"hello\n", "UnpicklingError"),               # not a pickle
    (pickle.dumps({"a": 1}), "KeyError: 'logits'"),  # another dict
    (pickle.dumps([1]), "TypeError"),                # another object
])
def test_a_wrong_results_pkl_is_one_line(setup, tmp_path, capsys, content, expected):
    """Reported: a truncated or foreign results.pkl gave a traceback; right: one line naming the file, exit 2."""
    _, lm, _ = setup
    bad = tmp_path / "results.pkl"
    bad.write_bytes(content)
    out = tmp_path / "p.json"
    out.write_text("{}")
    assert tune_weights.main(["--results_pkl", str(bad), "--lm_path", str(lm), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {bad}: not an evaluate_model.py results.pkl") and expected in err[-1]
    assert out.read_text() == "{}"  # an existing params file is left as it was
