"""CTC WFST decoding over a small TLG: sentences, homophones, exact scores, streaming, options, rescoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

kaldifst = pytest.importorskip("kaldifst")
kaldi_decoder = pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.decoding.ngram_rescore import NgramRescorer  # noqa: E402
from language_model.decoding.wfst import CtcWfstDecoder, LMResources, frame_log_probs  # noqa: E402
from language_model.graph.toy_lm import build_toy_lm, sentence_lm_ids, synthetic_logits  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402
from nejm_b2txt_utils.phonemes import PHONEME_TO_LM_ID  # noqa: E402

OPTS = LMParams(acoustic_scale=0.325, blank_penalty=90.0)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    lm_dir = build_toy_lm(tmp_path_factory.mktemp("lm") / "toy", with_unpruned=True)
    return LMResources(lm_dir)


def decode(res, logits, opts=OPTS, chunk=0):
    dec = CtcWfstDecoder(res, opts)
    step = chunk or len(logits)
    partials = [dec.accept_logits(logits[i : i + step]) for i in range(0, len(logits), step)]
    return partials, dec.finalize()


@pytest.mark.parametrize("sentence", ["i need water", "please help me", "open the door", "you want some water"])
def test_known_sentence_decodes_to_itself(toy, sentence):
    partials, nbest = decode(toy, synthetic_logits(sentence, seed=3))
    assert partials[-1] == sentence
    assert nbest[0].sentence == sentence
    assert nbest[0].sentence == nbest[0].sentence.strip().lower()


def test_homophones_resolved_by_the_ngram(toy):
    _, nbest = decode(toy, synthetic_logits("i want to go home", seed=1))
    by_sent = {h.sentence: h for h in nbest}
    assert nbest[0].sentence == "i want to go home"
    for other in ("i want two go home", "i want too go home"):
        assert other in by_sent, sorted(by_sent)
        assert by_sent[other].ac == pytest.approx(by_sent["i want to go home"].ac, abs=1e-3)  # same phones
        assert by_sent[other].lm < by_sent["i want to go home"].lm - 1.0
    _, nbest = decode(toy, synthetic_logits("open the red door", seed=2))
    by_sent = {h.sentence: h for h in nbest}
    assert nbest[0].sentence == "open the red door"
    assert by_sent["open the read door"].ac == pytest.approx(nbest[0].ac, abs=1e-3)


def test_nbest_is_distinct_sorted_and_within_lattice_beam(toy):
    _, nbest = decode(toy, synthetic_logits("i want to go home", seed=1, peak=6.0))
    sents = [h.sentence for h in nbest]
    assert len(nbest) >= 3 and len(set(sents)) == len(sents)
    totals = [h.total for h in nbest]
    assert totals == sorted(totals, reverse=True)
    assert totals[0] - totals[-1] <= OPTS.lattice_beam + 1e-6


def test_scores_match_the_best_path_exactly(toy):
    """(lm, ac) of the top hypothesis = the Viterbi path's (−graph, −acoustic/scale), and ac is the unscaled
    sum of penalised log-probabilities along that path's frame labels."""
    logits = synthetic_logits("i need some water", seed=5)
    _, nbest = decode(toy, logits)
    fd = kaldi_decoder.FasterDecoder(toy.tlg, kaldi_decoder.FasterDecoderOptions(beam=17, max_active=7000))
    scaled = (frame_log_probs(logits, 90.0) * 0.325).astype(np.float32)
    fd.decode(kaldi_decoder.DecodableCtc(scaled))
    ok, path = fd.get_best_path(True)
    ok, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(path)
    assert toy.words_to_text(olabels) == nbest[0].sentence
    assert nbest[0].lm == pytest.approx(-weight.value1, abs=2e-3)
    assert nbest[0].ac == pytest.approx(-weight.value2 / 0.325, abs=2e-3)
    logp = frame_log_probs(logits, 90.0)
    assert len(ilabels) == len(logits)
    manual = sum(logp[t, lab - 1] for t, lab in enumerate(ilabels))
    assert nbest[0].ac == pytest.approx(manual, abs=2e-3)


def test_streaming_chunks_give_the_same_result(toy):
    logits = synthetic_logits("please open the door", seed=7)
    p1, n1 = decode(toy, logits)
    p5, n5 = decode(toy, logits, chunk=5)
    assert p5[-1] == p1[-1] == "please open the door"
    assert len(p5) == math.ceil(len(logits) / 5) and p5[0] != p5[-1]
    assert [(h.sentence, round(h.ac, 3), round(h.lm, 3)) for h in n1] == [
        (h.sentence, round(h.ac, 3), round(h.lm, 3)) for h in n5]


def test_blank_skipping_keeps_repeats_separable(toy):
    """'i i' is AY, blank, AY: skipping the blank frame must re-insert it, or the CTC repeat collapses."""
    ids = [PHONEME_TO_LM_ID["AY"]] * 5 + [0] + [PHONEME_TO_LM_ID["AY"]] * 5 + [0] + sentence_lm_ids("need water")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(ids), 41)).astype(np.float32)
    logits[np.arange(len(ids)), ids] += 18.0
    logits[np.array(ids) == 0, 0] += 6.0  # confident blanks: p(blank) ~ 1/90 after the penalty
    _, plain = decode(toy, logits)
    skipping = LMParams(acoustic_scale=0.325, blank_penalty=90.0, ctc_blank_skip_threshold=0.005)
    dec = CtcWfstDecoder(toy, skipping)
    dec.accept_logits(logits)
    fed = dec._n_fed
    nbest = dec.finalize()
    assert plain[0].sentence == nbest[0].sentence == "i i need water"
    assert fed < len(logits)  # frames were skipped...
    assert fed > len(logits) - int((np.array(ids) == 0).sum())  # ...but the blank between the AYs came back


def test_options_apply(toy):
    logits = synthetic_logits("i want to go home", seed=1, peak=6.0)
    _, wide = decode(toy, logits)
    _, narrow = decode(toy, logits, LMParams(acoustic_scale=0.325, blank_penalty=90.0, lattice_beam=0.5))
    _, one = decode(toy, logits, LMParams(acoustic_scale=0.325, blank_penalty=90.0, nbest=1))
    assert len(wide) > len(narrow) >= 1 and len(one) == 1
    assert one[0].sentence == narrow[0].sentence == wide[0].sentence
    # a starved search (beam 1, at most 2 active tokens) is what both passes really use (the original ignored it)
    noisy = synthetic_logits("i want to go home", seed=1, peak=2.0)
    starved = LMParams(acoustic_scale=0.325, blank_penalty=90.0, beam=1.0, max_active=2, min_active=1)
    uncapped = LMParams(acoustic_scale=0.325, blank_penalty=90.0, lattice_max_arcs=10**7)  # peak 2: > 3000 arcs
    partials, full = decode(toy, noisy, uncapped)
    starved_partials, starved_nbest = decode(toy, noisy, starved)
    assert partials[-1] == "i want to go home" and starved_partials[-1] != partials[-1]
    assert len(full) == OPTS.nbest and len(starved_nbest) < 5
    # the lattice pass searches with min(beam, lattice_beam + margin): a wider one changes nothing here
    _, full_beam = decode(toy, noisy, LMParams(acoustic_scale=0.325, blank_penalty=90.0, lattice_pass_margin=50,
                                               lattice_max_arcs=10**7))
    assert CtcWfstDecoder(toy, OPTS).lattice_pass_beam == 13.0
    assert [(h.sentence, h.ac, h.lm) for h in full_beam] == [(h.sentence, h.ac, h.lm) for h in full]
    with pytest.raises(ValueError, match="max_active"):
        LMParams(max_active=1)
    # the default cap (lattice_max_arcs 3000) bounds that noisy lattice's n-best: fewer, the same best
    _, capped = decode(toy, noisy)
    assert 1 <= len(capped) < len(full) and capped[0].sentence == full[0].sentence


def test_empty_utterance_and_logits_after_finalize(toy):
    dec = CtcWfstDecoder(toy, OPTS)
    assert dec.finalize() == []
    assert dec.partial() == ""
    assert dec.accept_logits(synthetic_logits("i need water")) == "i need water"  # a new utterance starts
    assert dec.finalize()[0].sentence == "i need water"
    with pytest.raises(ValueError, match="shape"):
        dec.accept_logits(np.zeros((3, 40), np.float32))


def test_rescore_swaps_pruned_for_unpruned_ngram(toy):
    _, nbest = decode(toy, synthetic_logits("i want to go home", seed=1))
    rescorer = NgramRescorer(toy.lm_path, toy.words)
    out = rescorer.rescore(nbest, OPTS.acoustic_scale)
    before = {h.sentence: h for h in nbest}
    after = {h.sentence: h for h in out}
    # the unpruned ARPA adds "want two" (-0.1) and "two go" (-0.1) instead of the backoffs (-1.9, -1.7)
    gain = (-0.1 - 0.1 - (-0.3 - 1.6) - (-0.3 - 1.4)) * math.log(10)
    assert after["i want two go home"].lm - before["i want two go home"].lm == pytest.approx(gain, abs=1e-3)
    assert after["i want to go home"].lm == pytest.approx(before["i want to go home"].lm, abs=1e-4)
    assert after["i want two go home"].ac == before["i want two go home"].ac
    assert out[0].sentence == "i want two go home"


def test_rescore_without_unpruned_grammar_is_a_clear_error(tmp_path):
    lm_dir = build_toy_lm(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="G_no_prune.fst"):
        NgramRescorer(lm_dir, LMResources(lm_dir).words)


def test_missing_lm_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="TLG.fst"):
        LMResources(tmp_path)
