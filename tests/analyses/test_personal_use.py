"""Figure 4 logic: loading/validation of t15_personalUse.pkl, panels A, B, C."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses import personal_use as pu
from analyses.pkl_io import PklFormatError, write_pickle
from analyses.synthetic_pkl import synthetic_personal_use


def tiny_personal_use() -> dict:
    nan = float("nan")
    return {
        "trialized_info": {
            "correctness_rating": ["no user rating", "response timeout", "correct", "mostly correct",
                                   "one word wrong", "incorrect", "blank trial", "correct"],
            "post_implant_day": [40, 40, 100, 100, 100, 100, 100, 101],
            "wpm": [nan, nan, 30.0, 20.0, 25.0, 40.0, nan, 33.0],
        },
        "total_use_time": {40: 3600.0, 50: 0, 100: 7200.0, 101: 1800.0},
        "total_trial_count": {40: 2, 50: 0, 100: 5, 101: 1},
    }


def test_panels_hand_computed():
    data = pu.validate_personal_use(tiny_personal_use())
    use = pu.cumulative_use(data)
    assert use.days.tolist() == [40, 100, 101]  # zero-use day 50 skipped
    assert use.hours.tolist() == [1.0, 3.0, 3.5] and use.sentences.tolist() == [2, 7, 8]

    pie = pu.rating_summary(data)
    assert pie.labels == ("100% correct", "Mostly correct", "Incorrect")
    assert pie.counts == (2, 2, 1) and pie.total == 5  # timeout, blank and unrated left out
    assert pie.percents == pytest.approx((40.0, 40.0, 20.0))

    br = pu.daily_breakdown(data)
    assert br.days.tolist() == [40, 100, 101] and br.totals.tolist() == [2, 5, 1]
    assert br.percent(("response timeout", "no user rating")).tolist() == [100.0, 0.0, 0.0]
    assert br.percent(("mostly correct", "one word wrong")).tolist() == [0.0, 40.0, 0.0]
    assert br.mean_wpm[0] == 0.0  # every value NaN -> 0
    assert br.mean_wpm[1:].tolist() == pytest.approx([28.75, 33.0])

    text = pu.format_summary(data)
    assert "Total use: 3.50 hours, 8 sentences, 3 days" in text and "Incorrect: 1 (20.0%)" in text


@pytest.mark.parametrize("path, key", [((), "trialized_info"), (("trialized_info",), "wpm")])
def test_missing_key_is_named(tmp_path, path, key):
    data = tiny_personal_use()
    holder = data
    for p in path:
        holder = holder[p]
    del holder[key]
    pkl = write_pickle(data, tmp_path / "t15_personalUse.pkl")
    with pytest.raises(PklFormatError, match=rf"t15_personalUse\.pkl: .*missing key '{key}'"):
        pu.load_personal_use(pkl)


def test_bad_values_are_rejected():
    data = tiny_personal_use()
    data["trialized_info"]["correctness_rating"][0] = "great"
    with pytest.raises(PklFormatError, match="unknown values \\['great'\\]"):
        pu.validate_personal_use(data)
    data = tiny_personal_use()
    del data["total_trial_count"][101]
    with pytest.raises(PklFormatError, match=r"\['total_trial_count'\] misses day\(s\) \[101\]"):
        pu.validate_personal_use(data)


def test_synthetic_personal_use_is_realistic():
    data = pu.validate_personal_use(synthetic_personal_use(seed=0))
    assert data["synthetic"] is True
    pie = pu.rating_summary(data)
    assert pie.percents == pytest.approx((53.0, 32.3, 14.7), abs=2.0)
    use = pu.cumulative_use(data)
    assert 18000 < use.sentences[-1] < 30000 and 180 < use.hours[-1] < 320
    br = pu.daily_breakdown(data)
    late = br.mean_wpm[br.days > 120]
    assert 25 < late.mean() < 35
    early = br.days < 90
    assert np.all(br.percent(("no user rating",))[early] == 100.0)
    again = synthetic_personal_use(seed=0)
    assert again["total_use_time"] == data["total_use_time"]
    assert again["trialized_info"]["correctness_rating"] == data["trialized_info"]["correctness_rating"].tolist()
    assert synthetic_personal_use(seed=1)["total_use_time"] != data["total_use_time"]


def test_figures_say_synthetic():
    synth = pu.validate_personal_use(synthetic_personal_use(seed=0, mean_trials_per_day=5.0))
    real = pu.validate_personal_use(tiny_personal_use())
    for plot in (pu.plot_cumulative_use, pu.plot_correctness_pie, pu.plot_daily_breakdown):
        titles = [plot(d) for d in (synth, real)]
        texts = [" ".join([f._suptitle.get_text() if f._suptitle else ""] + [a.get_title() for a in f.axes])
                 for f in titles]
        assert "(synthetic data)" in texts[0] and "synthetic" not in texts[1]
    fig = pu.plot_correctness_pie(real)
    assert fig.axes[0].get_title() == "5 total sentences"
    assert not math.isnan(pu.rating_summary(real).percents[0])
