import numpy as np
import pytest

from nejm_b2txt_utils.metrics import (
    aggregate_error_rate,
    calculate_aggregate_error_rate,
    ctc_greedy_decode,
    edit_distance,
    logits_to_phonemes,
    word_error_rate,
)


def test_edit_distance_has_no_uint8_overflow():
    ref = list(range(400))
    assert edit_distance(ref, []) == 400
    assert edit_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2


def test_aggregate_is_sum_of_edits_over_sum_of_lengths():
    refs = [["a", "b", "c", "d"], ["e"]]
    hyps = [["a", "b", "c", "d"], ["f"]]
    er = aggregate_error_rate(refs, hyps, n_resamples=2000)
    assert er.rate == pytest.approx(1 / 5)  # not the mean of per-item rates (0.5)
    assert er.per_item == [0.0, 1.0]
    assert 0.0 <= er.ci_low <= er.rate <= er.ci_high <= 1.0
    agg, lo, hi, items = calculate_aggregate_error_rate(refs, hyps)
    assert agg == pytest.approx(0.2) and items == [0.0, 1.0]


def test_bootstrap_ci_is_reproducible_and_brackets_the_rate():
    rng = np.random.default_rng(0)
    refs = [list(rng.integers(0, 5, 20)) for _ in range(200)]
    hyps = [r[:-2] for r in refs]
    a = aggregate_error_rate(refs, hyps, seed=1)
    b = aggregate_error_rate(refs, hyps, seed=1)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.rate == pytest.approx(0.1)
    assert a.ci_low <= 0.1 <= a.ci_high


def test_empty_reference_gives_nan_item_not_a_crash():
    er = aggregate_error_rate([[], ["a"]], [["x"], ["a"]], n_resamples=100)
    assert np.isnan(er.per_item[0]) and er.rate == pytest.approx(1.0)


def test_greedy_ctc_collapses_repeats_before_dropping_blanks():
    # frames: A A blank A B B blank  -> A A B
    path = [1, 1, 0, 1, 2, 2, 0]
    logits = np.full((len(path), 41), -5.0)
    logits[np.arange(len(path)), path] = 5.0
    assert ctc_greedy_decode(logits).tolist() == [1, 1, 2]
    assert ctc_greedy_decode(logits, length=3).tolist() == [1]
    assert ctc_greedy_decode(np.zeros((0, 41))).tolist() == []


def test_logits_to_phonemes_handles_all_blank():
    logits = np.zeros((4, 41))
    logits[:, 0] = 1
    assert logits_to_phonemes(logits) == []


def test_wer_uses_the_evaluators_normalisation():
    er = word_error_rate(["Hello, world!"], ["hello world"], n_resamples=10)
    assert er.rate == 0.0 and er.n_ref == 2
