"""analyses/calibration_figure.py draws the calibration benchmark's JSON."""

import json

import numpy as np

from analyses import calibration_figure as cf


def day(none, n5, n10, full, sup, pse):
    return {"none_val_PER": none, "full": {"val_PER": full},
            "new_day": {"5": {"val_PER": n5}, "10": {"val_PER": n10}},
            "none_per_sentence_PER": [none] * 6, "online_supervised": {"per_sentence_PER": sup},
            "online_pseudo": {"per_sentence_PER": pse}}


def test_running_accuracy_is_the_trailing_mean_over_days():
    acc = cf.running_accuracy([[0.5, 0.3, 0.1], [0.3, 0.1, 0.1, 0.9]], window=2)
    assert np.allclose(acc, [60.0, 70.0, 85.0])  # day means 60, 80, 90 (the 4th sentence is cut)


def test_figure_from_json_and_a_one_line_error(tmp_path, capsys):
    result = {"data": "small (generated)",
              "days": [day(0.5, 0.3, 0.2, 0.1, [0.5, 0.4, 0.3, 0.2, 0.2, 0.1], [0.5] * 6),
                       day(0.4, 0.3, 0.2, 0.1, [0.4, 0.3, 0.3, 0.2, 0.1, 0.1], [0.4] * 6)]}
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert cf.main(["--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "fig")]) == 0
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"calibration_accuracy.png", "calibration_accuracy.pdf"}
    (tmp_path / "bad.json").write_text("{}")
    assert cf.main(["--json", str(tmp_path / "bad.json"), "--out", str(tmp_path / "fig2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'days'" in err[0]
