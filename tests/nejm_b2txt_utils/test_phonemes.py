import numpy as np
import pytest

from nejm_b2txt_utils import phonemes as ph


def test_orders_have_41_classes_with_sil_in_the_right_place():
    assert len(ph.MODEL_ORDER) == len(ph.LM_ORDER) == 41
    assert ph.MODEL_ORDER[0] == ph.LM_ORDER[0] == "BLANK"
    assert ph.MODEL_ORDER[40] == "SIL" and ph.LM_ORDER[1] == "SIL"
    assert ph.MODEL_ORDER[1] == "AA" and ph.MODEL_ORDER[39] == "ZH"
    assert ph.LM_ORDER[2] == "AA" and ph.LM_ORDER[40] == "ZH"
    assert list(ph.PHONEMES) == sorted(ph.PHONEMES)


def test_model_to_lm_is_the_originals_column_permutation():
    assert ph.MODEL_TO_LM_INDEX.tolist() == [0, 40, *range(1, 40)]
    x = np.arange(2 * 3 * 41, dtype=np.float32).reshape(2, 3, 41)
    lm = ph.model_to_lm_order(x)
    assert lm[..., 1].tolist() == x[..., 40].tolist()
    assert lm[..., 2].tolist() == x[..., 1].tolist()
    np.testing.assert_array_equal(ph.lm_to_model_order(lm), x)


def test_symbol_of_each_column_is_preserved():
    onehot = np.eye(41, dtype=np.float32)  # row i = class i in model order
    lm = ph.model_to_lm_order(onehot)
    for i, sym in enumerate(ph.MODEL_ORDER):
        assert ph.LM_ORDER[int(lm[i].argmax())] == sym


def test_wrong_class_count_is_rejected():
    with pytest.raises(ValueError, match="41 classes"):
        ph.model_to_lm_order(np.zeros((5, 40)))


def test_phoneme_id_round_trip_and_pipe_silence():
    ids = ph.phonemes_to_model_ids(["HH", "AH", " | ", "SIL"])
    assert ids == [16, 3, 40, 40]
    assert ph.model_ids_to_phonemes(ids, sil_symbol=" | ") == ["HH", "AH", " | ", " | "]
    with pytest.raises(ValueError, match="unknown phoneme"):
        ph.phonemes_to_model_ids(["XX"])
