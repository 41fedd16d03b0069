"""Figure 2 logic: loading/validation of t15_copyTask.pkl, per-day rPER/WER, example trial, plots."""

from __future__ import annotations

import numpy as np
import pytest

from analyses import copy_task as ct
from analyses.figure_style import apply_style, save_figure
from analyses.pkl_io import PklFormatError, write_pickle
from analyses.synthetic_pkl import COPY_TASK_GROUPS, synthetic_copy_task
from nejm_b2txt_utils.metrics import logits_to_phonemes


def tiny_copy_task() -> dict:
    """Three trials, two days, errors countable by hand."""
    logits = np.zeros((5, 41), dtype=np.float32)
    return {
        "cue_sentence": ["i need water", "yes", "go home"],
        "cue_sentence_phonemes": [["AY", "SIL", "N", "IY", "D", "SIL"], ["Y", "EH", "S", "SIL"], ["G", "OW", "SIL"]],
        "decoded_phonemes_raw": [["AY", "SIL", "N", "IH", "D", "SIL"], ["Y", "EH", "S", "SIL", "S"], ["G", "OW", "SIL"]],
        "decoded_sentence": ["i need water", "yes please", "no home"],
        "decoded_sentence_phonemes": [[], [], []],
        "decoded_logits": [logits, logits, logits],
        "post_implant_day": [25, 25, 30],
        "vocab_size": [50, 50, 125000],
    }


def test_error_rates_by_day_hand_computed():
    rows = ct.error_rates_by_day(ct.validate_copy_task(tiny_copy_task()), n_resamples=200)
    assert [(r.day, r.vocab_size, r.n_trials) for r in rows] == [(25, 50, 2), (30, 125000, 1)]
    # day 25: 1 substitution (IY->IH) + 1 insertion (S) over 6 + 4 cue phonemes; 1 inserted word over 3 + 1
    assert rows[0].rper.rate == pytest.approx(2 / 10) and rows[0].wer.rate == pytest.approx(1 / 4)
    assert rows[1].rper.rate == 0.0 and rows[1].wer.rate == pytest.approx(1 / 2)
    assert rows[0].rper.ci_low <= rows[0].rper.rate <= rows[0].rper.ci_high
    table = ct.format_rates_table(rows)
    assert "   25      50      2    20.00" in table and "   30  125000      1     0.00" in table


def test_missing_key_is_named_with_the_file(tmp_path):
    data = tiny_copy_task()
    del data["decoded_logits"]
    path = write_pickle(data, tmp_path / "t15_copyTask.pkl")
    with pytest.raises(PklFormatError, match=r"t15_copyTask\.pkl: missing key 'decoded_logits'"):
        ct.load_copy_task(path)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        ct.load_copy_task(tmp_path / "nope.pkl")


def test_bad_lengths_and_logit_shapes_are_rejected():
    data = tiny_copy_task()
    data["decoded_sentence"] = data["decoded_sentence"][:2]
    with pytest.raises(PklFormatError, match=r"\['decoded_sentence'\]=2"):
        ct.validate_copy_task(data)
    data = tiny_copy_task()
    data["decoded_logits"][1] = np.zeros((5, 40))
    with pytest.raises(PklFormatError, match=r"\['decoded_logits'\]\[1\] has shape \(5, 40\)"):
        ct.validate_copy_task(data)


def test_synthetic_copy_task_is_realistic_and_deterministic():
    data = ct.validate_copy_task(synthetic_copy_task(seed=1, trials_per_group=6))
    again = synthetic_copy_task(seed=1, trials_per_group=6)
    assert data["cue_sentence"] == again["cue_sentence"]
    assert all(np.array_equal(a, b) for a, b in zip(data["decoded_logits"], again["decoded_logits"]))
    assert synthetic_copy_task(seed=2, trials_per_group=6)["cue_sentence"] != data["cue_sentence"]
    assert data["synthetic"] is True
    assert set(data["vocab_size"].tolist()) == {50, 125000}
    assert sorted(set(data["post_implant_day"].tolist())) == sorted({d for d, *_ in COPY_TASK_GROUPS})
    # LM-order logits whose greedy CTC decode is the raw phoneme decode
    for logits, raw in zip(data["decoded_logits"], data["decoded_phonemes_raw"]):
        assert logits.dtype == np.float32 and logits.shape[1] == 41
        assert logits_to_phonemes(logits) == list(raw)
    rows = ct.error_rates_by_day(data, n_resamples=0)
    rper = np.mean([r.rper.rate for r in rows if r.vocab_size == 125000])
    assert 0.04 < rper < 0.2  # the paper's range (7-15 %)


def test_example_trial_text_and_index():
    data = ct.validate_copy_task(tiny_copy_task())
    assert ct.example_trial_index(data, 500) == 1 and ct.example_trial_index(data, 2) == 2
    text = ct.example_trial_text(data, 1)
    lines = text.splitlines()
    assert lines[0] == "Trial 1, post-implant day 25, vocabulary 50"
    assert lines[2].endswith("Y EH S |") and lines[3].endswith("Y EH S | S")
    value_columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines[1:]}
    assert len(lines) == 6 and len(value_columns) == 1  # five aligned lines


def test_softmax_handles_large_logits():
    p = ct.softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def figure_text(fig) -> str:
    parts = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
    return " ".join(parts)


def test_plots_say_synthetic_and_save_truetype(tmp_path):
    apply_style()
    synth = ct.validate_copy_task(synthetic_copy_task(seed=0, trials_per_group=2))
    real = ct.validate_copy_task(tiny_copy_task())
    rows = ct.error_rates_by_day(synth, n_resamples=50)
    for fig in (ct.plot_logit_traces(synth, 3), ct.plot_logit_heatmap(synth, 3),
                ct.plot_probability_heatmap(synth, 3), ct.plot_error_rates(rows, True)):
        assert "(synthetic data)" in figure_text(fig)
    fig = ct.plot_logit_heatmap(real, 0)
    assert figure_text(fig).strip() == 'Post-implant day 25, cue: "i need water"'
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][:3] == ["BLANK", "SIL", "AA"]
    paths = save_figure(fig, tmp_path / "out" / "heatmap")
    assert [p.name for p in paths] == ["heatmap.png", "heatmap.pdf"]
    assert b"/FontFile2" in paths[1].read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["heatmap.pdf", "heatmap.png"]  # no temp files
