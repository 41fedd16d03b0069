"""The original's ``nejm_b2txt_utils.general_utils`` names, for notebooks and scripts that import them.

Everything lives in the focused modules of this package; this file only re-exports.
"""

from nejm_b2txt_utils.lexicon import sentence_to_phonemes
from nejm_b2txt_utils.metrics import (
    calculate_aggregate_error_rate,
    calculate_error_rate,
    logits_to_phonemes,
)
from nejm_b2txt_utils.phonemes import LOGIT_PHONE_DEF, SIL_DEF, rearrange_speech_logits_pt
from nejm_b2txt_utils.text import remove_punctuation

__all__ = [
    "LOGIT_PHONE_DEF", "SIL_DEF", "calculate_aggregate_error_rate", "calculate_error_rate",
    "logits_to_phonemes", "rearrange_speech_logits_pt", "remove_punctuation", "sentence_to_phonemes",
]
