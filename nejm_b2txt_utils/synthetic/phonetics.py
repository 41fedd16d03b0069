"""Articulatory features of the 39 phonemes and SIL, and phoneme durations.

Each phoneme is a vector over :data:`FEATURES` (manner, place, voicing, vowel height/backness/
rounding/tension, r-colouring, a condition-independent "speech" flag, and a weak SIL flag).
Diphthongs (AW AY EY OW OY) have different onset and offset vectors, so the articulatory
trajectory glides across the phoneme, which the neural model turns into a time-varying response.
Every phoneme's (onset, offset) pair is distinct, so the labels are identifiable from the features.
"""

from __future__ import annotations

import numpy as np

from nejm_b2txt_utils.phonemes import PHONEMES, SIL

FEATURES: tuple[str, ...] = (
    "speech", "sil",
    # manner
    "stop", "fricative", "affricate", "nasal", "lateral", "rhotic", "glide", "aspirate",
    "voiced",
    # place (articulator)
    "bilabial", "labiodental", "dental", "alveolar", "postalveolar", "palatal", "velar", "glottal",
    # vowels
    "vowel", "high", "low", "front", "back", "round", "tense",
)  # fmt: skip
N_FEATURES = len(FEATURES)
_IDX = {f: i for i, f in enumerate(FEATURES)}

# (height 0=low..1=high, backness 0=front..1=back, rounded, tense, r-coloured)
_VOWEL_TARGETS: dict[str, tuple[float, float, float, float, float]] = {
    "AA": (0.0, 0.85, 0, 1, 0), "AE": (0.15, 0.0, 0, 0, 0), "AH": (0.45, 0.55, 0, 0, 0),
    "AO": (0.25, 1.0, 1, 1, 0), "EH": (0.5, 0.1, 0, 0, 0), "ER": (0.55, 0.5, 0.3, 1, 1),
    "IH": (0.85, 0.15, 0, 0, 0), "IY": (1.0, 0.0, 0, 1, 0), "UH": (0.85, 0.85, 1, 0, 0),
    "UW": (1.0, 1.0, 1, 1, 0), "OH": (0.55, 1.0, 1, 1, 0),
}  # fmt: skip
#: Diphthongs glide from the first target to the second.
_DIPHTHONGS: dict[str, tuple[str, str]] = {
    "AW": ("AA", "UH"), "AY": ("AA", "IH"), "EY": ("EH", "IY"), "OW": ("OH", "UW"), "OY": ("AO", "IY"),
}
# consonant -> (place(s), manner(s), voiced)
_CONSONANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]] = {
    "P": (("bilabial",), ("stop",), 0), "B": (("bilabial",), ("stop",), 1),
    "M": (("bilabial",), ("nasal",), 1), "F": (("labiodental",), ("fricative",), 0),
    "V": (("labiodental",), ("fricative",), 1), "TH": (("dental",), ("fricative",), 0),
    "DH": (("dental",), ("fricative",), 1), "T": (("alveolar",), ("stop",), 0),
    "D": (("alveolar",), ("stop",), 1), "N": (("alveolar",), ("nasal",), 1),
    "S": (("alveolar",), ("fricative",), 0), "Z": (("alveolar",), ("fricative",), 1),
    "L": (("alveolar",), ("lateral",), 1), "R": (("postalveolar",), ("rhotic",), 1),
    "SH": (("postalveolar",), ("fricative",), 0), "ZH": (("postalveolar",), ("fricative",), 1),
    "CH": (("postalveolar",), ("affricate",), 0), "JH": (("postalveolar",), ("affricate",), 1),
    "Y": (("palatal",), ("glide",), 1), "W": (("bilabial", "velar"), ("glide",), 1),
    "K": (("velar",), ("stop",), 0), "G": (("velar",), ("stop",), 1),
    "NG": (("velar",), ("nasal",), 1), "HH": (("glottal",), ("aspirate",), 0),
}  # fmt: skip

#: Mean duration (ms) per phoneme class at a normal rate; drawn per phoneme around these.
_MEAN_MS = {"vowel": 125.0, "diphthong": 150.0, "stop": 80.0, "fricative": 105.0, "affricate": 115.0,
            "nasal": 85.0, "lateral": 80.0, "rhotic": 85.0, "glide": 70.0, "aspirate": 75.0}


def _vowel_vector(target: tuple[float, float, float, float, float]) -> np.ndarray:
    height, back, rounded, tense, rhotic = target
    v = np.zeros(N_FEATURES)
    v[_IDX["speech"]] = 1.0
    v[_IDX["vowel"]] = 1.0
    v[_IDX["voiced"]] = 1.0
    v[_IDX["high"]] = height
    v[_IDX["low"]] = 1.0 - height
    v[_IDX["front"]] = 1.0 - back
    v[_IDX["back"]] = back
    v[_IDX["round"]] = rounded
    v[_IDX["tense"]] = tense
    v[_IDX["rhotic"]] = rhotic
    return v


def _consonant_vector(places: tuple[str, ...], manners: tuple[str, ...], voiced: int) -> np.ndarray:
    v = np.zeros(N_FEATURES)
    v[_IDX["speech"]] = 1.0
    for name in places + manners:
        v[_IDX[name]] = 1.0
    v[_IDX["voiced"]] = float(voiced)
    if "bilabial" in places and "glide" in manners:  # W: rounded lips
        v[_IDX["round"]] = 1.0
    return v


def _build_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onset [41, F], offset [41, F], mean duration ms [41]) indexed by model-order id (0 unused)."""
    n = len(PHONEMES) + 2
    onset = np.zeros((n, N_FEATURES))
    offset = np.zeros((n, N_FEATURES))
    mean_ms = np.zeros(n)
    for i, p in enumerate(PHONEMES, start=1):
        if p in _DIPHTHONGS:
            a, b = _DIPHTHONGS[p]
            onset[i], offset[i] = _vowel_vector(_VOWEL_TARGETS[a]), _vowel_vector(_VOWEL_TARGETS[b])
            mean_ms[i] = _MEAN_MS["diphthong"]
        elif p in _VOWEL_TARGETS:
            onset[i] = offset[i] = _vowel_vector(_VOWEL_TARGETS[p])
            mean_ms[i] = _MEAN_MS["vowel"]
        else:
            places, manners, voiced = _CONSONANTS[p]
            onset[i] = offset[i] = _consonant_vector(places, manners, voiced)
            mean_ms[i] = _MEAN_MS[manners[0]]
    sil = n - 1
    onset[sil, _IDX["sil"]] = offset[sil, _IDX["sil"]] = 1.0
    return onset, offset, mean_ms


ONSET, OFFSET, MEAN_DURATION_MS = _build_tables()
SIL_MODEL_ID = len(PHONEMES) + 1
assert SIL_MODEL_ID == 40 and SIL == "SIL"


def feature_trajectory(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_bins: int,
                       substeps: int = 4, onset: np.ndarray = ONSET, offset: np.ndarray = OFFSET) -> np.ndarray:
    """Articulatory feature time series ``[n_bins, D]`` (20 ms bins, averaged over substeps).

    Phoneme ``k`` (model-order id ``ids[k]``) occupies ``[starts[k], ends[k])`` in bins (fractional);
    its vector glides linearly from its onset to its offset target. Time outside any phoneme is zero
    (baseline); SIL segments carry only the weak ``sil`` flag. ``onset``/``offset`` ``[41, D]`` may
    extend the tables with extra columns.
    """
    fine = np.zeros((n_bins * substeps, onset.shape[1]))
    t = (np.arange(n_bins * substeps) + 0.5) / substeps
    for pid, s, e in zip(ids, starts, ends):
        lo, hi = np.searchsorted(t, s), np.searchsorted(t, e)
        if hi <= lo:
            continue
        frac = ((t[lo:hi] - s) / max(e - s, 1e-6))[:, None]
        fine[lo:hi] = onset[pid] * (1.0 - frac) + offset[pid] * frac
    return fine.reshape(n_bins, substeps, onset.shape[1]).mean(axis=1)
