"""tune_weights.py: a grid over saved logits in worker processes, the best combination as a params file that the
server's flags and the evaluator read."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
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


def _run(pkl, lm, out, *extra):
    return tune_weights.main(["--results_pkl", str(pkl), "--lm_path", str(lm), "--out", str(out), *map(str, extra)])


def _err_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("damage", ["words", "tlg"])
def test_a_damaged_lm_folder_is_one_line_before_the_pool(setup, tmp_path, capsys, monkeypatch, damage):
    """Reported: a worker initializer failing made the pool respawn workers forever; right: one line, exit 2."""
    import shutil

    _, lm, pkl = setup
    bad = tmp_path / "lm"
    shutil.copytree(lm, bad)
    if damage == "words":
        (bad / "words.txt").unlink()
    else:
        tlg = bad / "TLG.fst"
        with open(tlg, "r+b") as f:
            f.truncate(tlg.stat().st_size // 2)
    monkeypatch.setattr(tune_weights.multiprocessing, "get_context", lambda *a: pytest.fail("pool started"))
    assert _run(pkl, bad, tmp_path / "p.json", "--trials", "0:2") == 2
    line = _err_line(capsys)
    assert line.startswith(f"error: --lm_path {bad}: ")
    assert ("words.txt not found" in line) if damage == "words" else ("TLG.fst" in line)
    assert not (tmp_path / "p.json").exists()


def test_a_worker_init_failure_is_reported_by_the_first_job_not_looped(tmp_path, monkeypatch):
    import signal

    monkeypatch.setattr(tune_weights, "_WORKER", {})
    old = signal.getsignal(signal.SIGINT)
    try:
        tune_weights._init(str(tmp_path / "nope"), 1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # workers leave Ctrl-C to the main process
    finally:
        signal.signal(signal.SIGINT, old)
    with pytest.raises(tune_weights.WorkerInitError, match=f"--lm_path {tmp_path / 'nope'}: FileNotFoundError"):
        tune_weights._decode(((0, 0), {}, None))


def test_bad_out_paths_are_refused_before_decoding(setup, tmp_path, capsys, monkeypatch):
    d, lm, pkl = setup
    monkeypatch.setattr(tune_weights, "tune", lambda *a, **k: pytest.fail("decoding started"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [(pkl, "is the --results_pkl file"), (lm / "params.json", "lies inside --lm_path"),
             (tmp_path, "is a directory"), (afile / "p.json", f"{afile} is not a directory"),
             (afile / "sub" / "p.json", f"{afile} is not a directory"), ("", "--out is empty"),
             (" ", "--out is empty"), ("/dev/null", "not a regular file")]
    for out, expected in cases:
        assert _run(pkl, lm, out) == 2, out
        line = _err_line(capsys)
        assert line.startswith("error: --out") and expected in line, (out, line)
    assert afile.read_text() == "x" and not (lm / "params.json").exists()


def test_text_norm_is_an_argparse_choice(setup, tmp_path, capsys):
    _, lm, pkl = setup
    with pytest.raises(SystemExit) as exc:
        _run(pkl, lm, tmp_path / "p.json", "--text_norm", "bogus")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--text_norm: invalid choice: 'bogus'" in err and "'b2txt', 'original'" in err


def _pkl(tmp_path, logits, labels):
    p = tmp_path / "results.pkl"
    with open(p, "wb") as f:
        pickle.dump({"logits": logits, "sentence_label": labels}, f)
    return p


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((10, 7), np.float32), "trial 1: 'logits' has shape [10, 7]; expected [T, 41]"),
    (np.zeros((1, 10, 41), np.float32), "trial 1: 'logits' has shape [1, 10, 41]; expected [T, 41]"),
    (np.zeros((0, 41), np.float32), "trial 1: 'logits' has shape [0, 41]"),
    (np.full((10, 41), np.nan, np.float32), "trial 1: 'logits' has 410 NaN/inf values; expected a finite"),
    ("abc", "trial 1: 'logits' is not numeric"),
])
def test_bad_logits_name_the_file_and_trial(setup, tmp_path, capsys, monkeypatch, bad, expected):
    _, lm, _ = setup
    monkeypatch.setattr(tune_weights.multiprocessing, "get_context", lambda *a: pytest.fail("pool started"))
    good = synthetic_logits(SENTS[0], seed=0, peak=4.0)
    pkl = _pkl(tmp_path, [good, bad, good], SENTS[:3])
    assert _run(pkl, lm, tmp_path / "p.json", "--trials", "0:2") == 2
    line = _err_line(capsys)
    assert line.startswith(f"error: {pkl}: ") and expected in line
    assert _run(pkl, lm, tmp_path / "p.json", "--trials", "0:1", "--report_trials", "1:2") == 2
    line = _err_line(capsys)
    assert line.startswith(f"error: {pkl}: ") and expected in line


def test_labels_and_logits_of_different_lengths(setup, tmp_path, capsys):
    _, lm, _ = setup
    good = synthetic_logits(SENTS[0], seed=0, peak=4.0)
    pkl = _pkl(tmp_path, [good, good, good], SENTS[:2])
    assert _run(pkl, lm, tmp_path / "p.json", "--trials", "0:1") == 2
    assert _err_line(capsys) == (f"error: {pkl}: 'sentence_label' has 2 entries and 'logits' 3; expected one "
                                 "label per trial")


def test_trial_bounds_and_report_flag_name():
    with pytest.raises(tune_weights.ConfigError, match=r"--trials '0:1000': bound 1000 is outside the 140 trials"):
        tune_weights.parse_trials("0:1000", 140)
    with pytest.raises(tune_weights.ConfigError, match=r"^--report_trials '500:600' selects no trial of 140$"):
        tune_weights.parse_trials("500:600", 140, "--report_trials")
    assert tune_weights.parse_trials("130:140", 140) == list(range(130, 140))
    assert tune_weights.parse_trials("-3:", 140) == [137, 138, 139]
    assert tune_weights.parse_trials("4:", 6) == [4, 5]


def test_workers_capped_nbest_default_duplicates_once_and_effective_trials(setup, tmp_path, capsys, caplog):
    import logging

    from nejm_b2txt_utils.lm_params import LMParams

    d, lm, pkl = setup
    out = tmp_path / "p.json"
    with caplog.at_level(logging.INFO, logger="tune_weights"):
        assert _run(pkl, lm, out, "--trials", "0:2", "--workers", "69", "--acoustic_scale", "1", "1", "1.0",
                    "--blank_penalty", "9", "9") == 0
    capped = [r.getMessage() for r in caplog.records if "capped" in r.getMessage()]
    cores = os.cpu_count() or 1
    assert capped == [f"--workers 69 capped at {min(2, cores)} (2 jobs, {cores} cores)"]
    info = json.loads(out.read_text())
    assert len(info["results"]) == 1 and info["dev_trial_indices"] == [0, 1]
    assert info["params"]["nbest"] == LMParams().nbest == 100
    assert "nbest=100" in capsys.readouterr().out.strip().splitlines()[-1]


def test_no_g_fst_warns_once(setup, tmp_path, caplog):
    import logging
    import shutil

    _, lm, pkl = setup
    nog = tmp_path / "lm"
    shutil.copytree(lm, nog)
    (nog / "G.fst").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="tune_weights"):
        assert _run(pkl, nog, tmp_path / "p.json", "--trials", "0:1", "--workers", "1", "--acoustic_scale", "1",
                    "--blank_penalty", "9") == 0
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warns == [f"--lm_path {nog} has no G.fst: exact_ngram is skipped (n-best scored with the search's costs)"]


def test_ctrl_c_is_one_line_exit_130_and_keeps_the_old_file(setup, tmp_path, capsys, monkeypatch):
    _, lm, pkl = setup
    out = tmp_path / "p.json"
    out.write_text("{}")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_weights, "tune", interrupted)
    assert _run(pkl, lm, out) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted"]
    assert out.read_text() == "{}"


def test_docstring_example_paths():
    assert "runs/demo/eval_greedy/results.pkl" in tune_weights.__doc__
    assert "--lm_path runs/demo/lm/3gram_lm_sil" in tune_weights.__doc__
    assert "runs/demo/eval/results.pkl" not in tune_weights.__doc__ and "lm3" not in tune_weights.__doc__
