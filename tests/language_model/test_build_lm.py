"""build_lm.py: corpus normalisation rules, the CLI end to end (decoding through the built TLG,
homophones resolved by the n-gram), reuse of an up-to-date folder, errors, the wordfreq 1-gram."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model import build_lm  # noqa: E402
from language_model.graph.lexicon import read_lexicon  # noqa: E402
from language_model.ngram.arpa import read_arpa  # noqa: E402
from language_model.ngram.corpus import normalize_lm_sentence, normalized_sentences, split_sentences  # noqa: E402
from nejm_b2txt_utils.lexicon import sentence_to_phonemes  # noqa: E402
from nejm_b2txt_utils.symbol_table import read_symbols  # noqa: E402
from nejm_b2txt_utils.text import number_to_words, verbalize_numbers  # noqa: E402
from tests.language_model.graph.synthetic_ctc import decode_words, synthetic_lm_logp  # noqa: E402

SCRIPT = Path(build_lm.__file__)

# "to", "two" and "too" sound the same (T UW): only the n-gram context tells them apart.
CORPUS = """I want to go home. We need to go now!  They have to go to the store.
I have two dogs. She has two cats, and we have two cars.
It is too late. That is too bad... The dogs are too big.
I want to eat at 7 o'clock; Dr. Smith said it costs $20.
My blorptastic cat likes the store.
"""


def test_sentence_split_and_recipe_normalisation():
    assert split_sentences("Mr. Smith came. He left! J. K. Rowling wrote it. Ok") == [
        "Mr. Smith came.",
        "He left!",
        "J. K. Rowling wrote it.",
        "Ok",
    ]
    assert normalize_lm_sentence("The U.S.A. isn\u2019t big: it's HUGE!") == "the usa isn't big it's huge"
    assert normalize_lm_sentence("Visit www.example.com now") == "visit wwwexamplecomwwwexamplecom now"
    assert (
        normalize_lm_sentence("'Tis the students' books, goin' home'") == "tis the students' books goin home"
    )
    assert normalize_lm_sentence("Plan B is fine") == ""  # one-letter word other than i / a
    assert normalize_lm_sentence("Plan 9", number_words=False) == "plan"


def test_numbers_become_words():
    assert (
        number_to_words(1_234_567) == "one million two hundred thirty four thousand five hundred sixty seven"
    )
    assert number_to_words(40) == "forty" and number_to_words(0) == "zero"
    text = verbalize_numbers("In 1995 and the 1990s, 50% of 1,000 paid $5.50 on the 21st and 2005 at 3.14")
    assert normalize_lm_sentence(text, number_words=False) == (
        "in nineteen ninety five and the nineteen nineties fifty percent of one thousand paid five dollars "
        "fifty cents on the twenty first and two thousand five at three point one four"
    )
    assert verbalize_numbers("mp3 and 3d") == "mp3 and 3d"


def test_normalized_sentences_stream_and_vocab_filter():
    lines = ["Hello there. General Kenobi!", "", "You are a bold one."]
    assert list(normalized_sentences(lines)) == ["hello there", "general kenobi", "you are a bold one"]
    assert list(normalized_sentences(lines, vocab={"hello", "there"})) == ["hello there"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(CORPUS * 3)
    return path


@pytest.fixture(scope="module")
def built(corpus_file) -> Path:
    out = corpus_file.parent / "lm3"
    assert build_lm.main(["--corpus", str(corpus_file), "--order", "3", "--vocab", "corpus", "--out", str(out),
                          "--prune", "1e-3", "--keep_unpruned"]) == 0  # fmt: skip
    return out


def test_cli_writes_the_original_layout(built):
    names = {p.name for p in built.iterdir()}
    assert {"TLG.fst", "words.txt", "tokens.txt", "lexicon.txt", "G.fst", "lm.arpa"} <= names
    assert {"G_no_prune.fst", "lm_no_prune.arpa", "build_info.json"} <= names
    words = set(read_symbols(built / "words.txt").values())
    assert {"to", "two", "too", "seven", "o'clock", "twenty", "dollars", "dr", "blorptastic"} <= words
    assert "<unk>" not in words and "." not in words
    lexicon = read_lexicon(built / "lexicon.txt")
    assert lexicon["two"] == ["T", "UW"] and len(lexicon["blorptastic"]) >= 8  # G2P for a non-CMU word
    pruned, full = read_arpa(built / "lm.arpa"), read_arpa(built / "lm_no_prune.arpa")
    assert sum(pruned.num_ngrams()) < sum(full.num_ngrams())
    info = json.loads((built / "build_info.json").read_text())
    assert info["ngrams"] == pruned.num_ngrams() and info["peak_rss_mb"] > 0


@pytest.mark.parametrize(
    "sentence", ["i want to go home", "i have two dogs", "it is too late", "we need to go now"]
)
def test_built_graph_decodes_and_resolves_homophones(built, sentence):
    phones, _ = sentence_to_phonemes(sentence)
    words, _ = decode_words(built, synthetic_lm_logp(phones, seed=len(sentence)))
    assert " ".join(words) == sentence


def test_kneser_ney_build_decodes_too(corpus_file, tmp_path):
    out = tmp_path / "kn"
    assert build_lm.main(["--corpus", str(corpus_file), "--order", "2", "--smoothing", "kn", "--vocab", "corpus",
                          "--min_count", "1", "--sil_prob", "0.2", "--out", str(out)]) == 0  # fmt: skip
    phones, _ = sentence_to_phonemes("she has two cats")
    assert decode_words(out, synthetic_lm_logp(phones))[0] == ["she", "has", "two", "cats"]


def test_rerun_reuses_the_folder_unless_forced(built, corpus_file, caplog):
    caplog.set_level(logging.INFO)
    argv = ["--corpus", str(corpus_file), "--order", "3", "--vocab", "corpus", "--out", str(built),
            "--prune", "1e-3", "--keep_unpruned"]  # fmt: skip
    stamp = (built / "TLG.fst").stat().st_mtime_ns
    assert build_lm.main(argv) == 0
    assert (built / "TLG.fst").stat().st_mtime_ns == stamp
    assert "up to date" in caplog.text
    assert (
        build_lm.input_hash(build_lm.parse_args([*argv[:-3], "--prune", "1e-4"]))
        != json.loads((built / "build_info.json").read_text())["input_hash"]
    )


def test_stdin_corpus_and_vocab_size_map_rare_words_to_unk(tmp_path):
    out = tmp_path / "stdin"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--corpus", "-", "--order", "2", "--vocab", "corpus", "--vocab_size", "5",
         "--out", str(out)],
        input="the cat sat. the cat ran. the dog sat. a cat is here.\n" * 4, text=True, capture_output=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(read_symbols(out / "words.txt").values()) == {"<eps>", "#0", "<s>", "</s>", "the", "cat", "sat",
                                                             "ran", "dog"}  # fmt: skip
    assert json.loads((out / "build_info.json").read_text())["oov_tokens"] == 4 * 3  # a, is, here


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--corpus", "missing.txt", "--out", "x"], "file not found: missing.txt"),
        (["--corpus", "ADIR", "--out", "x"], "ADIR: a folder; expected a text file"),
        (["--corpus", "EMPTY", "--out", "x", "--order", "0"], "--order must be >= 1"),
        (["--out", "x"], "either --corpus"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, argv, message, capsys):
    (tmp_path / "EMPTY").write_text("")
    (tmp_path / "ADIR").mkdir()
    argv = [str(tmp_path / a) if a in ("missing.txt", "EMPTY", "ADIR") else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        build_lm.main(argv)
    assert exc.value.code == 2
    assert message.replace("missing.txt", str(tmp_path / "missing.txt")) in capsys.readouterr().err


def test_empty_corpus_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("!!! ... ###\nx y z\n\n")  # nothing survives normalisation
    assert build_lm.main(["--corpus", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o")]) == 2  # bad input
    err = capsys.readouterr().err
    assert "no usable sentence" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_wordfreq_unigram_over_the_cmu_vocabulary(tmp_path):
    out = tmp_path / "openwebtext_1gram_lm_sil"
    assert build_lm.main(["--unigram_wordfreq", "--out", str(out)]) == 0
    words = read_symbols(out / "words.txt")
    assert len(words) == 126_052 + 4  # every CMU word, plus <eps> #0 <s> </s>
    lm = read_arpa(out / "lm.arpa")
    ids = lm.word_ids()
    assert sum(lm.probs[0].values()) == pytest.approx(1.0, abs=1e-4)
    assert lm.prob(ids["the"]) > lm.prob(ids["water"]) > lm.prob(ids["aardvark"]) > 0
    phones, _ = sentence_to_phonemes("i need water")
    assert decode_words(out, synthetic_lm_logp(phones))[0] == ["i", "need", "water"]


@pytest.mark.parametrize("line", ["i want to go", "don't stop it's rock'n roll", "a b c", "plan b is fine",
                                  "hello  world", "'tis the way", "The store", "we paid 20 dollars", "x",
                                  "x' marks it", "the 'b' side", "u.s army", "go b", "i a"])
def test_already_normal_lines_take_the_fast_path_to_the_same_result(line):
    from language_model.ngram.corpus import _ALREADY_NORMAL

    slow = [s for s in (normalize_lm_sentence(x) for x in split_sentences(line)) if s]
    assert list(normalized_sentences([line + "\n"])) == slow
    assert bool(_ALREADY_NORMAL.fullmatch(line)) == (line in ("i want to go", "don't stop it's rock'n roll", "i a"))
