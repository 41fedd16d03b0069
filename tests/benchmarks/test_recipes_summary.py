"""benchmarks/recipes.py's arithmetic: seed means, the seed-averaged PER and the paired difference."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.recipes import paired_difference, seed_mean_edits, summarise_recipe


def run(per_trial_edits, seed):
    edits = np.asarray(per_trial_edits)
    lens = [10, 20, 10, 10]
    return {"seed": seed, "PER": float(edits.sum() / sum(lens)), "edits": edits.tolist(), "lens": lens,
            "val_PER_best": 0.5, "steps_per_s": 2.0, "parameters": 1000}


def test_two_seeds_average_per_trial_and_per_seed():
    runs = [run([1, 2, 0, 3], 1), run([3, 4, 2, 1], 2)]  # PERs 6/50 = 0.12 and 10/50 = 0.20
    edits, lens = seed_mean_edits(runs)
    assert edits.tolist() == [2.0, 3.0, 1.0, 2.0] and lens.tolist() == [10, 20, 10, 10]
    s = summarise_recipe("baseline", runs)
    assert s["PER_mean"] == pytest.approx(0.16)
    assert s["PER_sem"] == pytest.approx(0.04)  # std(ddof=1) 0.0566 / sqrt(2)
    assert s["PER_seed_mean"] == pytest.approx(8 / 50)
    low, high = s["seed_mean_ci95"]
    assert low < 0.16 < high and "edits" not in s["runs"][0]


def test_paired_difference_is_the_per_gap_with_a_ci_that_excludes_zero_when_every_trial_improves():
    lens = np.full(40, 10.0)
    a, b = np.full(40, 1.0), np.full(40, 3.0)
    r = paired_difference(a, b, lens)
    assert r["diff"] == pytest.approx(-0.2) and r["ci95"] == pytest.approx([-0.2, -0.2])
    b_mixed = np.where(np.arange(40) % 2 == 0, 0.0, 2.0)  # same total as a: no difference
    r = paired_difference(a, b_mixed, lens)
    assert r["diff"] == pytest.approx(0.0) and r["ci95"][0] < 0 < r["ci95"][1]
