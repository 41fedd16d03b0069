"""The 41-class label inventory in its two orders, and conversion between them.

Model / HDF5 order (what ``seq_class_ids`` hold and ``GRUDecoder`` emits):
    0 BLANK, 1..39 AA..ZH (alphabetical), 40 SIL
LM / paper / pkl order (what the language-model server and ``t15_copyTask.pkl`` expect):
    0 BLANK, 1 SIL, 2..40 AA..ZH
Mixing the two up is the classic bug of this field, so every array that crosses the boundary
goes through :func:`model_to_lm_order` / :func:`lm_to_model_order`.
"""

from __future__ import annotations

import numpy as np

#: The 39 ARPAbet phonemes without stress, alphabetical (same list as the LM's all_phoneme_units.txt).
PHONEMES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
    "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip

BLANK = "BLANK"
SIL = "SIL"
N_CLASSES = 41

#: Model / HDF5 order (the original's ``LOGIT_TO_PHONEME`` uses ``' | '`` for SIL when printing).
MODEL_ORDER: tuple[str, ...] = (BLANK, *PHONEMES, SIL)
#: LM / paper order (the original's ``LOGIT_PHONE_DEF``).
LM_ORDER: tuple[str, ...] = (BLANK, SIL, *PHONEMES)
#: The original's alias names, kept for users who import them.
LOGIT_TO_PHONEME = MODEL_ORDER
LOGIT_PHONE_DEF = LM_ORDER
SIL_DEF = [SIL]

BLANK_ID = 0
SIL_ID_MODEL = MODEL_ORDER.index(SIL)  # 40
SIL_ID_LM = LM_ORDER.index(SIL)  # 1

PHONEME_TO_MODEL_ID: dict[str, int] = {p: i for i, p in enumerate(MODEL_ORDER)}
PHONEME_TO_LM_ID: dict[str, int] = {p: i for i, p in enumerate(LM_ORDER)}

#: ``lm[..., k] = model[..., MODEL_TO_LM_INDEX[k]]``: columns [0, 40, 1..39].
MODEL_TO_LM_INDEX = np.array([MODEL_ORDER.index(p) for p in LM_ORDER], dtype=np.int64)
#: ``model[..., k] = lm[..., LM_TO_MODEL_INDEX[k]]``: columns [0, 2..40, 1].
LM_TO_MODEL_INDEX = np.array([LM_ORDER.index(p) for p in MODEL_ORDER], dtype=np.int64)


def _check_classes(arr: np.ndarray) -> None:
    if arr.shape[-1] != N_CLASSES:
        raise ValueError(f"logits: expected {N_CLASSES} classes on the last axis, got shape {arr.shape}")


def model_to_lm_order(logits: np.ndarray) -> np.ndarray:
    """Reorder class columns (last axis) from model order to LM order.

    Args:
        logits: ``[..., 41]`` in model order (BLANK=0, AA..ZH=1..39, SIL=40).

    Returns:
        ``[..., 41]`` in LM order (BLANK=0, SIL=1, AA..ZH=2..40), same leading shape.

    Raises:
        ValueError: the last axis is not 41.
    """
    arr = np.asarray(logits)
    _check_classes(arr)
    return arr[..., MODEL_TO_LM_INDEX]


def lm_to_model_order(logits: np.ndarray) -> np.ndarray:
    """Inverse of :func:`model_to_lm_order`.

    Args:
        logits: ``[..., 41]`` in LM order.

    Returns:
        ``[..., 41]`` in model order.

    Raises:
        ValueError: the last axis is not 41.
    """
    arr = np.asarray(logits)
    _check_classes(arr)
    return arr[..., LM_TO_MODEL_INDEX]


def rearrange_speech_logits_pt(logits: np.ndarray) -> np.ndarray:
    """The original helper's name for :func:`model_to_lm_order` (it worked on [B, T, 41]).

    Args:
        logits: ``[..., 41]`` in model order.

    Returns:
        ``[..., 41]`` in LM order.
    """
    return model_to_lm_order(logits)


def phonemes_to_model_ids(phonemes: list[str]) -> list[int]:
    """Map phoneme symbols (``'SIL'`` or ``' | '`` for silence) to model-order ids.

    Args:
        phonemes: stress-free ARPAbet symbols.

    Returns:
        Ids in 1..40.

    Raises:
        ValueError: an unknown symbol (or BLANK).
    """
    ids = []
    for p in phonemes:
        key = SIL if p.strip() in ("|", SIL) else p
        if key not in PHONEME_TO_MODEL_ID or key == BLANK:
            raise ValueError(f"unknown phoneme {p!r}: expected one of {', '.join(PHONEMES)} or SIL")
        ids.append(PHONEME_TO_MODEL_ID[key])
    return ids


def model_ids_to_phonemes(ids: list[int] | np.ndarray, sil_symbol: str = SIL) -> list[str]:
    """Map model-order ids back to symbols.

    Args:
        ids: ids in 0..40 (any shape; flattened).
        sil_symbol: how SIL is rendered (the original used ``' | '``).

    Returns:
        The symbols.

    Raises:
        ValueError: an id outside 0..40.
    """
    out = []
    for i in np.asarray(ids, dtype=np.int64).ravel():
        if not 0 <= i < N_CLASSES:
            raise ValueError(f"class id {i} out of range 0..{N_CLASSES - 1}")
        sym = MODEL_ORDER[i]
        out.append(sil_symbol if sym == SIL else sym)
    return out
