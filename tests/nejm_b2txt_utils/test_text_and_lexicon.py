from nejm_b2txt_utils.g2p import default_g2p
from nejm_b2txt_utils.lexicon import Lexicon, sentence_to_model_ids, sentence_to_phonemes
from nejm_b2txt_utils.text import normalize_sentence, remove_punctuation


def test_remove_punctuation_matches_the_original_rules():
    assert remove_punctuation("Hello, World!  It's 5 o'clock -- now.") == "hello world it's o'clock now"
    assert remove_punctuation("rock 'n roll") == "rock'n roll"
    # general_utils' variant keeps "- " as is
    assert remove_punctuation("well- known") == "well- known"


def test_evaluator_normalisation_also_replaces_dash_space():
    assert normalize_sentence("Well- known, re-use IT!") == "well known re-use it"
    assert normalize_sentence("   ") == ""


def test_sentence_to_phonemes_follows_the_label_convention():
    phones, cleaned = sentence_to_phonemes("They can pretty much, do it!")
    assert cleaned == "they can pretty much do it"
    assert phones[:7] == ["DH", "EY", "SIL", "K", "AE", "N", "SIL"]
    assert phones[-1] == "SIL" and phones.count("SIL") == 6
    assert sentence_to_phonemes("...") == (["SIL"], "")


def test_model_ids_use_sil_40():
    ids = sentence_to_model_ids("hi")
    assert ids == [16, 6, 40]  # HH AY SIL


def test_cmu_first_pronunciation_and_stress_stripped():
    lex = Lexicon()
    assert lex.pronounce("read") == ["R", "EH", "D"]
    assert lex.pronounce("the") == ["DH", "AH"]


def test_offline_g2p_pronounces_unknown_words_plausibly():
    lex = Lexicon()
    assert not lex.in_cmu("brainophone")
    phones = lex.pronounce("brainophone")
    assert phones[:3] == ["B", "R", "EY"] and phones[-1] == "N"
    assert default_g2p().predict("hello") == ["HH", "EH1", "L", "OW0"]


def test_hyphenated_oov_words_are_split():
    lex = Lexicon()
    assert lex.pronounce("sun-moon") == lex.pronounce("sun") + lex.pronounce("moon")
