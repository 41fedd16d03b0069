"""TLG building: symbol tables, L/T topology, and decoding synthetic CTC posteriors through the graph."""

from __future__ import annotations

import math

import pytest

kaldifst = pytest.importorskip("kaldifst")
kaldi_decoder = pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.graph.grammar_fst import filter_arpa  # noqa: E402
from language_model.graph.lexicon import add_lex_disambig, read_lexicon  # noqa: E402
from language_model.graph.tlg import (  # noqa: E402
    N_TOKENS,
    build_lm_dir,
    ctc_token_fst_text,
)
from nejm_b2txt_utils.lexicon import sentence_to_phonemes  # noqa: E402
from nejm_b2txt_utils.symbol_table import read_symbols  # noqa: E402
from tests.language_model.graph.synthetic_ctc import decode_words, synthetic_lm_logp  # noqa: E402

LEXICON = {
    "i": ["AY"],
    "want": ["W", "AA", "N", "T"],
    "to": ["T", "UW"],
    "two": ["T", "UW"],
    "too": ["T", "UW"],
    "go": ["G", "OW"],
    "red": ["R", "EH", "D"],
    "read": ["R", "EH", "D"],
}

# A hand-written bigram: "want to" is likelier than "want two"; "red" likelier than "read" alone.
ARPA = """\\data\\
ngram 1=11
ngram 2=6

\\1-grams:
-1.0 </s>
-99 <s> -0.5
-1.0 i -0.3
-1.0 want -0.3
-1.0 to -0.3
-1.0 two -0.3
-1.5 too -0.3
-1.0 go -0.3
-1.2 red -0.3
-1.4 read -0.3
-2.0 <unk>

\\2-grams:
-0.2 <s> i
-0.2 i want
-0.3 want to
-0.3 to go
-0.3 go </s>
-0.5 want two

\\end\\
"""


@pytest.fixture(scope="module")
def small_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    (root / "lm.arpa").write_text(ARPA)
    return build_lm_dir(LEXICON, root / "lm.arpa", root / "lm", sil_prob=0.5, keep_intermediate=True)


def test_lm_dir_layout_and_symbol_tables(small_lm):
    names = {p.name for p in small_lm.iterdir()}
    assert {"TLG.fst", "words.txt", "tokens.txt", "lexicon.txt", "G.fst", "lm.arpa"} <= names
    words = read_symbols(small_lm / "words.txt")
    assert words[0] == "<eps>"
    assert [words[i] for i in range(1, 9)] == sorted(LEXICON)
    assert [words[9], words[10], words[11]] == ["#0", "<s>", "</s>"]
    tokens = read_symbols(small_lm / "tokens.txt")
    assert [tokens[i] for i in (0, 1, 2, 3, 41)] == ["<eps>", "<blk>", "SIL", "AA", "ZH"]
    # to/two/too share T UW (#1..#3), red/read share R EH D (#1, #2); #4 is the silence symbol
    assert [tokens[i] for i in range(42, len(tokens))] == ["#0", "#1", "#2", "#3", "#4"]
    assert read_lexicon(small_lm / "lexicon.txt") == {w: LEXICON[w] for w in sorted(LEXICON)}
    assert (small_lm / "lm.arpa").read_text() == ARPA


def test_add_lex_disambig_marks_homophones_and_prefixes():
    entries = [
        ("a", ["AH"]),
        ("ab", ["AH", "B"]),
        ("to", ["T", "UW"]),
        ("two", ["T", "UW"]),
        ("x", ["K", "S"]),
    ]
    out, top = add_lex_disambig(entries)
    assert out == [
        ("a", ["AH", "#1"]),  # prefix of "ab"
        ("ab", ["AH", "B"]),
        ("to", ["T", "UW", "#1"]),
        ("two", ["T", "UW", "#2"]),
        ("x", ["K", "S"]),
    ]
    assert top == 2


def test_ctc_topology_structure():
    t = kaldifst.compile(ctc_token_fst_text(n_disambig=2))
    assert t.num_states == 41  # start/blank state + one per non-blank token
    # state 0: blank loop + 40 emitting arcs + 3 disambig loops; state i: loop, blank, 39 changes, 3 loops
    assert t.num_arcs(0) == 1 + 40 + 3
    assert all(t.num_arcs(s) == 1 + 1 + 39 + 3 for s in range(1, 41))
    assert all(t.final(s).value == 0.0 for s in range(41))


def test_tlg_input_side_is_tokens_only(small_lm):
    tlg = kaldifst.StdVectorFst.read(str(small_lm / "TLG.fst"))
    ilabels = {arc.ilabel for s in kaldifst.StateIterator(tlg) for arc in kaldifst.ArcIterator(tlg, s)}
    assert ilabels <= set(range(0, N_TOKENS + 1)) and max(ilabels) >= 3
    lg = kaldifst.StdVectorFst.read(str(small_lm / "LG.fst"))
    lg_ilabels = {arc.ilabel for s in kaldifst.StateIterator(lg) for arc in kaldifst.ArcIterator(lg, s)}
    assert lg_ilabels & set(range(42, 47))  # LG still has the disambiguation symbols T consumed


def test_decodes_known_sentence_with_exact_graph_cost(small_lm):
    phones, _ = sentence_to_phonemes("i want to go")  # a SIL after every word
    words, cost = decode_words(small_lm, synthetic_lm_logp(phones))
    assert words == ["i", "want", "to", "go"]
    # G: <s> i, i want, want to, to go, go </s> = 10^-(0.2+0.2+0.3+0.3+0.3); L: no SIL at start, SIL x4
    expected = 1.3 * math.log(10) + 5 * math.log(2)
    assert cost == pytest.approx(expected, abs=1e-3)


def test_homophones_follow_the_grammar(tmp_path):
    phones, _ = sentence_to_phonemes("i want two go")  # acoustically identical to "i want to go"
    lm_dir = build_lm_dir(LEXICON, _arpa(tmp_path, ARPA), tmp_path / "a")
    assert decode_words(lm_dir, synthetic_lm_logp(phones, seed=1))[0] == ["i", "want", "to", "go"]
    # now "want two go" (-0.1 - 0.3 - 1.0) beats "want to go" (via backoff: -0.3 - 1.0 - 0.3)
    flipped = ARPA.replace("-0.3 want to", "-1.9 want to").replace("-0.5 want two", "-0.1 want two")
    lm_dir = build_lm_dir(LEXICON, _arpa(tmp_path, flipped), tmp_path / "b")
    assert decode_words(lm_dir, synthetic_lm_logp(phones, seed=1))[0] == ["i", "want", "two", "go"]


def _arpa(tmp_path, text: str):
    path = tmp_path / f"lm{abs(hash(text))}.arpa"
    path.write_text(text)
    return path


def test_no_silence_lexicon_decodes_without_sil_frames(tmp_path):
    lm_dir = build_lm_dir(LEXICON, _arpa(tmp_path, ARPA), tmp_path / "nosil", sil_prob=0.0)
    assert read_symbols(lm_dir / "tokens.txt")[max(read_symbols(lm_dir / "tokens.txt"))] == "#3"
    phones = ["AY", "W", "AA", "N", "T", "T", "UW", "G", "OW"]
    words, cost = decode_words(lm_dir, synthetic_lm_logp(phones, seed=2))
    assert words == ["i", "want", "to", "go"]
    assert cost == pytest.approx(1.3 * math.log(10), abs=1e-3)


def test_rebuild_replaces_folder_and_bad_inputs_raise(tmp_path):
    out = tmp_path / "lm"
    build_lm_dir(LEXICON, _arpa(tmp_path, ARPA), out)
    (out / "stale.txt").write_text("x")
    build_lm_dir({"i": ["AY"], "go": ["G", "OW"]}, _arpa(tmp_path, ARPA), out)
    assert not (out / "stale.txt").exists()
    assert len(read_symbols(out / "words.txt")) == 2 + 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    with pytest.raises(ValueError, match="phones"):
        build_lm_dir({"i": ["AY1"]}, _arpa(tmp_path, ARPA), out)
    with pytest.raises(ValueError, match="reserved"):
        build_lm_dir({"<unk>": ["AH"]}, _arpa(tmp_path, ARPA), out)
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        build_lm_dir(LEXICON, tmp_path / "missing.arpa", out)
    with pytest.raises(ValueError, match="sil_prob"):
        build_lm_dir(LEXICON, _arpa(tmp_path, ARPA), out, sil_prob=1.0)


def test_filter_arpa_drops_unk_and_out_of_vocabulary_ngrams(tmp_path):
    src = _arpa(tmp_path, ARPA)
    counts = filter_arpa(src, tmp_path / "f.arpa", vocab={"i", "want", "to", "go", "<s>", "</s>"})
    assert counts == {1: 6, 2: 5}
    text = (tmp_path / "f.arpa").read_text()
    assert "<unk>" not in text and "two" not in text and "ngram 2=5" in text
