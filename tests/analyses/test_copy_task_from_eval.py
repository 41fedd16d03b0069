"""Evaluation-run results -> t15_copyTask.pkl: structure, post-implant days, rates by hand, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from analyses import copy_task as ct
from analyses.copy_task_from_eval import day_lookup, main, results_to_copytask, vocab_size_of_corpus
from analyses.pkl_io import PklFormatError, read_pickle, write_pickle
from nejm_b2txt_utils.description_csv import BlockRow, write_description_csv


def fake_results() -> dict:
    """What ``evaluate_model.py --eval_type val --results_pkl`` writes: parallel per-trial lists."""
    rng = np.random.default_rng(0)
    return {
        "session": ["t15.2023.08.13", "t15.2023.08.13", "t15.2023.08.18", "t15.2023.08.18"],
        "block_num": [3, 3, 5, 5],
        "trial_num": [0, 1, 0, 1],
        "corpus": ["Switchboard", "Switchboard", "50-Word", "50-Word"],
        "sentence_label": ["I need water.", "Yes!", "Go home", None],  # the last is unlabelled: skipped
        "pred_sentence": ["i need water", "yes please", "no home", "anything"],
        "greedy_phonemes": [["AY", "SIL", "N", "IH", "D", "SIL", "W", "AO", "T", "ER", "SIL"],
                            ["Y", "EH", "S", "SIL", "S"],
                            ["G", "OW", "SIL", "HH", "OW", "M", "SIL"],
                            ["AA", "SIL"]],
        "true_phonemes": [["AY", "SIL", "N", "IY", "D", "SIL", "W", "AO", "T", "ER", "SIL"],
                          ["Y", "EH", "S", "SIL"],
                          ["G", "OW", "SIL", "HH", "OW", "M", "SIL"],
                          None],
        "logits": [rng.normal(size=(n, 41)).astype(np.float32) for n in (30, 12, 20, 8)],
        "lm_candidates": [None] * 4,
    }


DAYS = {"t15.2023.08.13": 27, "t15.2023.08.18": 32}


def test_results_to_copytask_structure_and_rates(tmp_path):
    data = results_to_copytask(fake_results(), DAYS)
    path = write_pickle(data, tmp_path / "t15_copyTask.pkl")
    loaded = ct.load_copy_task(path)  # passes the Figure 2 loader
    assert loaded["post_implant_day"].tolist() == [27, 27, 32]
    assert loaded["vocab_size"].tolist() == [125000, 125000, 50]
    assert loaded["cue_sentence"] == ["i need water", "yes", "go home"]  # the evaluator's normalisation
    assert loaded["decoded_logits"][0].shape == (30, 41)
    assert loaded["decoded_sentence_phonemes"][1] == ["Y", "EH", "S", "SIL", "P", "L", "IY", "Z", "SIL"]
    assert "synthetic" not in loaded

    rows = {(r.day, r.vocab_size): r for r in ct.error_rates_by_day(loaded, n_resamples=100)}
    # day 27: IY->IH and an inserted S = 2 edits over 11 + 4 label phonemes; one inserted word over 3 + 1
    assert rows[(27, 125000)].rper.rate == pytest.approx(2 / 15)
    assert rows[(27, 125000)].wer.rate == pytest.approx(1 / 4)
    assert rows[(32, 50)].rper.rate == 0.0 and rows[(32, 50)].wer.rate == pytest.approx(1 / 2)


def test_optional_keys_are_derived():
    results = fake_results()
    for key in ("greedy_phonemes", "true_phonemes", "block_num", "trial_num", "lm_candidates"):
        del results[key]
    logits = np.full((6, 41), -5.0, dtype=np.float32)
    for t, cls in enumerate([0, 4, 4, 0, 1, 0]):  # LM order: 4 = AH, 1 = SIL
        logits[t, cls] = 5.0
    results["logits"][0] = logits
    data = results_to_copytask(results, DAYS)
    assert data["decoded_phonemes_raw"][0] == ["AH", "SIL"]  # greedy CTC decode of the LM-order logits
    assert data["cue_sentence_phonemes"][0] == ["AY", "SIL", "N", "IY", "D", "SIL", "W", "AO", "T", "ER", "SIL"]
    assert data["block_num"] == [None, None, None]


def test_errors_name_what_is_wrong():
    results = fake_results()
    del results["pred_sentence"]
    with pytest.raises(PklFormatError, match="missing key 'pred_sentence'"):
        results_to_copytask(results, DAYS, source="run.pkl")
    results = fake_results()
    results["logits"][1] = np.zeros((12, 40))
    with pytest.raises(PklFormatError, match=r"trial 1 \(t15.2023.08.13\): logits have shape \(12, 40\)"):
        results_to_copytask(results, DAYS)
    results = fake_results()
    results["sentence_label"] = [None] * 4
    with pytest.raises(PklFormatError, match="--eval_type val"):
        results_to_copytask(results, DAYS)
    with pytest.raises(KeyError, match="t15.2023.08.18"):
        results_to_copytask(fake_results(), {"t15.2023.08.13": 27})


def test_day_lookup_from_csv_and_implant_date(tmp_path):
    csv = tmp_path / "description.csv"
    write_description_csv([BlockRow("2023-08-13", 27, 3, 2, "Switchboard", "Val/Test")], csv)
    assert day_lookup(csv)("t15.2023.08.13") == 27
    with pytest.raises(KeyError, match="2023-08-18 not found"):
        day_lookup(csv)("t15.2023.08.18")
    both = day_lookup(csv, implant_date="2023-07-17")  # T15: 2023-08-11 is day 25
    assert both("t15.2023.08.18") == 32 and both("t15.2025.04.13") == 636
    assert vocab_size_of_corpus("50-Word") == 50 and vocab_size_of_corpus("Openwebtext") == 125000


def test_cli(tmp_path, capsys):
    results = write_pickle(fake_results(), tmp_path / "results.pkl")
    csv = tmp_path / "description.csv"
    write_description_csv([BlockRow("2023-08-13", 27, 3, 2, "Switchboard", "Val/Test"),
                           BlockRow("2023-08-18", 32, 5, 2, "50-Word", "Val/Test")], csv)
    out = tmp_path / "t15_copyTask.pkl"
    assert main(["--results", str(results), "--csv", str(csv), "--out", str(out)]) == 0
    assert ct.load_copy_task(out)["post_implant_day"].tolist() == [27, 27, 32]
    assert main(["--results", str(tmp_path / "missing.pkl"), "--csv", str(csv), "--out", str(out)]) == 1
    assert "missing.pkl" in capsys.readouterr().err
    assert main(["--results", str(results), "--implant_date", "2023-07-17", "--out", str(out), "--synthetic"]) == 0
    assert read_pickle(out, "x")["synthetic"] is True


def test_reads_the_evaluators_own_results_pkl(tmp_path):
    """Key names checked against model_training.eval_results.write_results_pkl when it is installed."""
    eval_results = pytest.importorskip("model_training.eval_results")
    fake = fake_results()
    records = [{k: fake[k][i] for k in fake if k != "logits"} | {"logits": eval_results.encode_array(fake["logits"][i])}
               for i in range(4)]
    path = eval_results.write_results_pkl(records, tmp_path / "results.pkl")
    data = results_to_copytask(read_pickle(path, "results"), DAYS)
    assert len(data["cue_sentence"]) == 3
    assert np.array_equal(data["decoded_logits"][2], fake["logits"][2])
