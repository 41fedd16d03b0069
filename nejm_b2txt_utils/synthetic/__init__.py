"""Realistic synthetic T15 data: the real data's layout and schema, with a neural encoding model.

``python -m nejm_b2txt_utils.synthetic --preset {tiny,small,full} --out DIR --seed N`` or
:func:`generate`. Modules, one job each: :mod:`.sessions` (the 45 real sessions and the presets'
block plans), :mod:`.sentences` / :mod:`.wordlists` (corpus text), :mod:`.phonetics` (articulatory
features), :mod:`.neural` (encoding model with day drift), :mod:`.writer` (streaming to disk).
"""

from nejm_b2txt_utils.synthetic.neural import NeuralParams, SessionEncoder, normalise_block, plan_timing
from nejm_b2txt_utils.synthetic.sentences import CORPORA, lm_corpus_sentences, make_sentence
from nejm_b2txt_utils.synthetic.sessions import PRESETS, SESSIONS, full_plan, preset_plan
from nejm_b2txt_utils.synthetic.writer import (
    CSV_NAME,
    DATA_SUBDIR,
    LM_CORPUS_NAME,
    block_sentences,
    block_trials,
    generate,
)

__all__ = [
    "CORPORA", "CSV_NAME", "DATA_SUBDIR", "LM_CORPUS_NAME", "PRESETS", "SESSIONS", "NeuralParams",
    "SessionEncoder", "block_sentences", "block_trials", "full_plan", "generate", "lm_corpus_sentences", "make_sentence",
    "normalise_block", "plan_timing", "preset_plan",
]
