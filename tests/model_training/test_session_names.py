"""A session folder not named by date (issue 22 case 4): a warning at training, evaluation runs."""

import logging

from model_training.config import load_config
from nejm_b2txt_utils.description_csv import CorpusLookup, session_date
from tests.model_training.conftest import REPO, tiny_overrides


def test_session_date_and_the_corpus_of_an_undated_session(tiny_data):
    assert session_date("t15.2023.08.13") == "2023-08-13"
    assert session_date("my_new_day") is None and session_date("t15.2023.8.x") is None
    lookup = CorpusLookup.from_csv(tiny_data / "t15_copyTaskData_description.csv")
    assert lookup("my_new_day", 1) == "unknown"  # was a ValueError traceback in evaluation


def test_an_undated_session_folder_is_ordered_by_name_with_a_warning(tiny_data, tmp_path, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    sessions = sorted(p.name for p in (data / "hdf5_data_final").iterdir())
    (data / "hdf5_data_final" / sessions[-1]).rename(data / "hdf5_data_final" / "my_new_day")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(REPO / "model_training" / "rnn_args.yaml", tiny_overrides(data, tmp_path / "run"))
    assert list(cfg.dataset.sessions)[0] == "my_new_day"  # 'm' < 't': day 0, as before, but said
    (msg,) = [r.getMessage() for r in caplog.records if "not of the form" in r.getMessage()]
    assert "'my_new_day', day index 0" in msg and "ordered by name" in msg
