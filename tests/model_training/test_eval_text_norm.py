"""Issue 13 case 5 in the evaluator's table: WER of correct decodes is 0 by default, the original's on request,
and the table says which normalisation it used."""

import pytest

from model_training.eval_results import per_corpus_table
from model_training.evaluate_model import parse_args

CASES = [("The primary coil has 50 turns.", "the primary coil has fifty turns"),
         ("I don\u2019t know.", "i don't know"), ("Wait\u2014what?", "wait what"),
         ("It's a well-known fact.", "it's a well known fact")]


def records():
    return [{"corpus": "Switchboard", "sentence_label": ref, "pred_sentence": hyp, "true_phonemes": ["AH", "SIL"],
             "greedy_phonemes": ["AH", "SIL"]} for ref, hyp in CASES]


@pytest.mark.parametrize("text_norm,wer", [("b2txt", 0.0), ("original", (1 + 1 + 2 + 2) / (5 + 3 + 1 + 4))])
def test_table_wer_and_its_normalisation(text_norm, wer):
    rows, text = per_corpus_table(records(), with_wer=True, text_norm=text_norm)
    assert rows[-1]["corpus"] == "all" and rows[-1]["WER"] == pytest.approx(wer) and rows[-1]["PER"] == 0.0
    lines = text.splitlines()
    assert lines[0] == f"WER after text normalisation '{text_norm}' (evaluate_model.py --text_norm)"
    assert lines[-1].startswith("all") and lines[-1][46:].startswith(f"{100 * wer:6.2f} [")  # the WER column


def test_evaluate_model_flag_defaults_to_the_shared_normalisation():
    assert parse_args([]).text_norm == "b2txt"
    assert parse_args(["--text_norm", "original"]).text_norm == "original"
    with pytest.raises(SystemExit):
        parse_args(["--text_norm", "nfkc"])


def test_submission_text_is_lower_case_letters_spaces_and_apostrophes(tmp_path):
    """Issue 22 case 10: the 1-gram's CMU words with '-' or '.' reached the Kaggle CSV."""
    import csv

    from model_training.eval_results import write_submission_csv
    from nejm_b2txt_utils.text import submission_text

    assert submission_text("the bas-reliefs") == "the bas reliefs"
    assert submission_text("baton-rouge's at a.m. in the u.s.") == "baton rouge's at am in the us"
    assert submission_text("  Don't  STOP -- now ") == "don't stop now"
    path = write_submission_csv(["the bas-reliefs", "a.m.", ""], tmp_path / "sub.csv")
    rows = list(csv.reader(path.open()))
    assert rows == [["id", "text"], ["0", "the bas reliefs"], ["1", "am"], ["2", ""]]
    raw = write_submission_csv(["AA B SIL"], tmp_path / "greedy.csv", words=False)
    assert list(csv.reader(raw.open()))[1] == ["0", "AA B SIL"]
