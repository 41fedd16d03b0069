"""G_no_prune.fst (kaldilm's arpa2fst) -> n-gram store: the FST's arrays read through a memmap equal
kaldifst's, and the store from the FST scores every sentence as the store from the unpruned ARPA does."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("kaldilm")
pytest.importorskip("kaldifst")

from language_model.graph.fst_arrays import read_fst_arrays  # noqa: E402
from language_model.graph.fst_io import FstReadError, read_fst  # noqa: E402
from language_model.ngram.arpa import read_arpa  # noqa: E402
from language_model.ngram.store import NgramStore  # noqa: E402
from language_model.ngram.store_convert import arpa_to_store, g_fst_to_store  # noqa: E402
from tests.language_model._store_testing import build_original_layout_lm  # noqa: E402


@pytest.fixture(scope="module", params=[3, 4])
def lm_dir(request, tmp_path_factory):
    return build_original_layout_lm(tmp_path_factory.mktemp("lm") / f"o{request.param}", order=request.param)


def test_fst_arrays_equal_kaldifst(lm_dir):
    import kaldifst

    arrays = read_fst_arrays(lm_dir / "G_no_prune.fst")
    fst = read_fst(lm_dir / "G_no_prune.fst")
    rows = [(s, a.ilabel, a.olabel, a.weight.value, a.nextstate) for s in range(fst.num_states)
            for a in kaldifst.ArcIterator(fst, s)]
    got = np.stack([arrays.state, arrays.ilabel, arrays.olabel, arrays.weight, arrays.nextstate], axis=1)
    assert got.shape == (len(rows), 5) and len(rows) > 100
    np.testing.assert_allclose(got, np.array(rows), rtol=1e-7)
    assert arrays.start == fst.start
    np.testing.assert_array_equal(arrays.final, [fst.final(s).value for s in range(fst.num_states)])


def test_truncated_fst_is_a_one_line_error(lm_dir, tmp_path):
    data = (lm_dir / "G_no_prune.fst").read_bytes()
    (tmp_path / "G.fst").write_bytes(data[:-8])
    with pytest.raises(FstReadError, match=r"G\.fst: .*truncated"):
        read_fst_arrays(tmp_path / "G.fst")


def test_g_fst_store_scores_equal_the_arpa_store(lm_dir, tmp_path):
    from_arpa = NgramStore(arpa_to_store(lm_dir / "lm_no_prune.arpa", tmp_path / "a"))
    from_fst = NgramStore(g_fst_to_store(lm_dir / "G_no_prune.fst", lm_dir / "words.txt", tmp_path / "g"))
    lm = read_arpa(lm_dir / "lm_no_prune.arpa")
    assert from_fst.order == lm.order
    # the ARPA's <unk> n-grams are filtered out of G (make_tlg.sh); every other n-gram is in both
    no_unk = [sum(1 for g in p if lm.words.index("<unk>") not in g) for p in lm.probs]
    assert from_fst.counts[1:] == no_unk[1:] and from_fst.counts[0] == no_unk[0] + 1  # + <unk> at -99
    rng = random.Random(0)
    words = [w for w in from_fst.vocab if w not in ("<s>", "</s>", "<unk>")]
    sentences = [rng.choices(words, k=rng.randint(0, 10)) for _ in range(400)]
    got = from_fst.score_sentences(sentences)
    np.testing.assert_allclose(got, from_arpa.score_sentences(sentences), atol=2e-5)
    np.testing.assert_allclose(got, [lm.sentence_logprob(s) / np.log(10) for s in sentences], atol=2e-5)


def test_another_lms_words_txt_is_a_one_line_error(lm_dir, tmp_path):
    """--words of another LM (fewer symbols, or none of #0) was a KeyError/IndexError traceback."""
    from language_model.ngram.store_convert import ConvertError

    lines = (lm_dir / "words.txt").read_text().splitlines()
    short = tmp_path / "short_words.txt"
    backoff_line = [x for x in lines if x.startswith("#0 ")]
    short.write_text("\n".join(lines[: len(lines) // 2] + backoff_line) + "\n")
    with pytest.raises(ConvertError, match=r"short_words\.txt: label \d+ of the FST is not in it \(\d+ labels missing\);"
                                           r" expected the words.txt of .*G_no_prune\.fst's own LM folder"):
        g_fst_to_store(lm_dir / "G_no_prune.fst", short, tmp_path / "s")
    no_backoff = tmp_path / "no_backoff_words.txt"
    no_backoff.write_text("\n".join(x for x in lines if not x.startswith("#0 ")) + "\n")
    with pytest.raises(ConvertError, match=r"no #0 \(backoff\) symbol"):
        g_fst_to_store(lm_dir / "G_no_prune.fst", no_backoff, tmp_path / "b")
    assert not (tmp_path / "s").exists() and not (tmp_path / "b").exists()
