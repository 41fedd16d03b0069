"""Word-level n-best from lattices (exact weights) and the original's n-best augmentation."""

from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np
import pytest

from language_model.decoding.augment import augment_nbest, substitution_positions
from nejm_b2txt_utils.hypothesis import Hypothesis


def reference_substitutions(cue: list[str], output: list[str]) -> list[int]:
    """Recursive memoised Levenshtein backtrace as spec §4.8 describes it (ties: insertion, deletion,
    substitution); returns the positions in ``output`` labelled as substitutions."""

    @lru_cache(None)
    def back(i: int, j: int) -> tuple[int, tuple]:
        if i == 0:
            return j, ("I",) * j
        if j == 0:
            return i, ("D",) * i
        if output[i - 1] == cue[j - 1]:
            c, p = back(i - 1, j - 1)
            return c, (*p, "M")
        ins, dele, sub = back(i, j - 1), back(i - 1, j), back(i - 1, j - 1)
        if ins[0] <= dele[0] and ins[0] <= sub[0]:
            return ins[0] + 1, (*ins[1], "I")
        if dele[0] <= ins[0] and dele[0] <= sub[0]:
            return dele[0] + 1, (*dele[1], "D")
        return sub[0] + 1, (*sub[1], "R")

    path = [p for p in back(len(output), len(cue))[1] if p != "I"]
    return [k for k, p in enumerate(path) if p == "R"]


def test_substitution_alignment_matches_the_reference():
    rng = random.Random(0)
    vocab = "a b c d e".split()
    for _ in range(300):
        n = rng.randint(0, 7)
        s1 = [rng.choice(vocab) for _ in range(n)]
        s2 = [rng.choice(vocab) for _ in range(rng.randint(0, 7))]
        assert substitution_positions(s1, s2) == reference_substitutions(s1, s2), (s1, s2)
    assert substitution_positions("i want to go".split(), "i want two go".split()) == [2]
    assert substitution_positions("a b c".split(), "b c d".split()) == []  # a deletion and an insertion


def test_augment_nbest_single_word_swaps_with_penalised_mean_scores():
    nbest = [
        Hypothesis(" i want to go home", ac=-50.0, lm=-10.0),
        Hypothesis("you want two go home", ac=-52.0, lm=-12.0),
        Hypothesis("i want to go", ac=-60.0, lm=-9.0),
    ]
    out = augment_nbest(nbest, top_candidates_to_augment=20, acoustic_scale=0.3, score_penalty_percent=0.01)
    sents = [h.sentence for h in out]
    # the two 5-word sentences differ at positions 0 and 2: each swap is made both ways
    new = {"you want to go home", "i want two go home"}
    assert set(sents) == {"i want to go home", "you want two go home", "i want to go"} | new
    assert len(sents) == len(set(sents)) == 5
    ac, lm = -51.0 * 1.01, -11.0 * 1.01
    for h in out:
        if h.sentence in new:
            assert (h.ac, h.lm) == (pytest.approx(ac), pytest.approx(lm))
    totals = [0.3 * h.ac + h.lm for h in out]
    assert totals == sorted(totals, reverse=True)
    assert out[0].sentence == "i want to go home"  # stripped; an augmented one never beats the best


def test_augment_respects_the_window_and_keeps_small_lists():
    nbest = [Hypothesis("a x", -1.0, -1.0), Hypothesis("b y", -2.0, -1.0), Hypothesis("c z", -3.0, -1.0)]
    assert len(augment_nbest(nbest, top_candidates_to_augment=0)) == 3
    two = augment_nbest(nbest, top_candidates_to_augment=2)  # one pair: "b x", "a y"
    assert sorted(h.sentence for h in two) == ["a x", "a y", "b x", "b y", "c z"]
    assert len(augment_nbest(nbest, top_candidates_to_augment=3)) == 3 + 6
    assert [h.sentence for h in augment_nbest(nbest[:1])] == ["a x"]
    assert augment_nbest([]) == []


kaldifst = pytest.importorskip("kaldifst")
kaldi_decoder = pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from language_model.decoding.lattice import read_lattice, split_scores  # noqa: E402
from language_model.decoding.wfst import CtcWfstDecoder, LMResources, frame_log_probs  # noqa: E402
from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return LMResources(build_toy_lm(tmp_path_factory.mktemp("lm") / "toy"))


def raw_lattice(res, logits):
    scaled = (frame_log_probs(logits, 90.0) * 0.325).astype(np.float32)
    dec = kaldi_decoder.LatticeSimpleDecoder(res.tlg, kaldi_decoder.LatticeSimpleDecoderConfig(beam=17, lattice_beam=8))
    dec.decode(kaldi_decoder.DecodableCtc(scaled))
    ok, lat = dec.get_raw_lattice(True)
    assert ok
    return lat


def test_binary_lattice_reader_matches_the_text_form(toy):
    lat = raw_lattice(toy, synthetic_logits("i need some water", seed=2))
    parsed = read_lattice(lat)
    assert parsed.start == lat.start and len(parsed.arcs) == lat.num_states
    rows = [line.split() + ["0,0"] for line in lat.to_str().splitlines()]  # weight One() is not printed
    text_arcs = sorted((int(p[0]), int(p[1]), int(p[2]), int(p[3]), *map(float, p[4].split(",")))
                       for p in rows if len(p) >= 5)
    bin_arcs = sorted((s, int(a["next"]), int(a["ilabel"]), int(a["olabel"]), float(a["graph"]), float(a["acoustic"]))
                      for s, arcs in enumerate(parsed.arcs) for a in arcs)
    assert len(text_arcs) == len(bin_arcs) > 100
    for t, b in zip(text_arcs, bin_arcs):
        assert t[:4] == b[:4] and t[4:] == pytest.approx(b[4:], rel=1e-5, abs=1e-5)
    for s, (g, a) in parsed.finals.items():
        assert (lat.final(s).value1, lat.final(s).value2) == pytest.approx((g, a))


def test_split_scores_is_the_best_alignment_of_each_sequence(toy):
    logits = synthetic_logits("i want to go home", seed=1, peak=5.0)
    lat = read_lattice(raw_lattice(toy, logits))
    dec = CtcWfstDecoder(toy, LMParams(acoustic_scale=0.325, blank_penalty=90.0))
    dec.accept_logits(logits)
    nbest = dec.finalize()
    ids = {w: i for i, w in enumerate(toy.words)}
    seqs = [tuple(ids[w] for w in h.sentence.split()) for h in nbest[:10]]
    assert split_scores(lat, seqs + [(ids["water"],)])[-1] is None  # not in the lattice
    for h, (g, a) in zip(nbest, split_scores(lat, seqs)):
        assert h.lm == pytest.approx(-g, abs=1e-4) and h.ac == pytest.approx(-a / 0.325, abs=1e-3)
    # each sequence's best alignment: no path of it is cheaper than graph + acoustic, and n-best totals are
    # the shortest distances of the word-determinised lattice
    totals = [-(h.lm + 0.325 * h.ac) for h in nbest]
    assert totals == sorted(totals) and math.isfinite(totals[-1])


def test_substitution_alignment_of_long_sentences_matches_the_reference():
    """The banded alignment (prefix/suffix trimmed, band = Hamming distance + 1) against the full-table
    reference on long sentences that differ at both ends, in the middle, or by a shift."""
    rng = random.Random(1)
    vocab = "a b c d".split()
    for _ in range(40):
        base = [rng.choice(vocab) for _ in range(rng.randint(30, 60))]
        other = base.copy()
        for pos in rng.sample(range(len(base)), rng.randint(1, 4)) + [0, len(base) - 1]:
            other[pos] = rng.choice(vocab)
        if rng.random() < 0.3:  # a shifted variant: one word dropped, one appended
            other = other[1:] + [rng.choice(vocab)]
        assert substitution_positions(base, other) == reference_substitutions(base, other)
        assert substitution_positions(other, base) == reference_substitutions(other, base)


def determinized_nbest(lat, n: int, width: float) -> list[tuple[float, tuple[int, ...]]]:
    """Reference n-best: the word acceptor compiled from text by kaldifst, epsilons removed and fully
    determinized (both pruned at ``width``), then its ``n`` shortest paths within ``width`` of the best (the
    pruned FST also has paths beyond it, made of arcs that each lie on some path within it, and the
    n-best drops those); ``[(cost rounded to 2e-3, words)]``."""
    lines = [f"{s} {int(a['next'])} {int(a['olabel'])} {int(a['olabel'])} {float(a['graph']) + float(a['acoustic'])!r}"
             for s in [lat.start] + [x for x in range(lat.num_states) if x != lat.start] for a in lat.arcs[s]]
    lines += [f"{s} {g + a!r}" for s, (g, a) in lat.finals.items()]
    ref = kaldifst.compile("\n".join(lines) + "\n", acceptor=False)
    kaldifst.rmepsilon(ref, weight=str(width))
    paths = kaldifst.convert_nbest_to_vector(kaldifst.shortest_path(kaldifst.determinize(ref, weight=str(width)), n=n))
    out = sorted((round(p[3].value / 2e-3) * 2e-3, tuple(p[2])) for p in map(kaldifst.get_linear_symbol_sequence, paths))
    return [(c, s) for c, s in out if c <= out[0][0] + width + 2e-3]


def rounded(seqs) -> list[tuple[float, tuple[int, ...]]]:
    return sorted((round(c / 2e-3) * 2e-3, s) for s, c in seqs)


def test_fast_paths_equal_the_full_extraction(toy):
    """nbest 1 (best path, no determinization) = the top of the n-best; the beam-pruned split = the unpruned one;
    the lazy unique n-shortest paths = the n-best of the fully determinized acceptor (sequences and totals)."""
    from language_model.decoding.lattice import distinct_word_sequences

    logits = synthetic_logits("i want to go home", seed=1, peak=5.0)
    lat = read_lattice(raw_lattice(toy, logits))
    seqs = distinct_word_sequences(lat, 50, 8.0)
    assert len(seqs) >= 5 and [c for _, c in seqs] == sorted(c for _, c in seqs)
    assert len(set(s for s, _ in seqs)) == len(seqs)  # distinct
    assert split_scores(lat, [s for s, _ in seqs], 8.0) == split_scores(lat, [s for s, _ in seqs])
    want = determinized_nbest(lat, 50, 8.0)
    got = rounded(seqs)
    assert [s for _, s in got] == [s for _, s in want] and np.allclose([c for c, _ in got], [c for c, _ in want],
                                                                         atol=5e-3)
    for nb in (1, 100):
        dec = CtcWfstDecoder(toy, LMParams(acoustic_scale=0.325, blank_penalty=90.0, nbest=nb))
        dec.accept_logits(logits)
        out = dec.finalize()
        if nb == 1:
            one = out
    assert len(one) == 1 and len(out) > 5
    assert (one[0].sentence, one[0].words) == (out[0].sentence, out[0].words) == ("i want to go home", seqs[0][0])
    assert one[0].ac == pytest.approx(out[0].ac, abs=1e-4) and one[0].lm == pytest.approx(out[0].lm, abs=1e-4)


def test_nbest_at_lattice_beam_20_is_the_exact_100_best(toy):
    """Noisy logits and lattice_beam 20: a full determinization at 20 ran for minutes (12 took 5 s) on this
    20-word graph; the lazy unique n-shortest-paths search lists the exact 100 best distinct sequences."""
    import pywrapfst

    from language_model.decoding.lattice import _linear_paths, _word_acceptor, distinct_word_sequences

    logits = synthetic_logits("i need some water", seed=2, peak=3.0)
    scaled = (frame_log_probs(logits, 1.0) * 0.3).astype(np.float32)
    dec = kaldi_decoder.LatticeSimpleDecoder(toy.tlg, kaldi_decoder.LatticeSimpleDecoderConfig(beam=13,
                                                                                                lattice_beam=20))
    dec.decode(kaldi_decoder.DecodableCtc(scaled))
    lat = read_lattice(dec.get_raw_lattice(True)[1])
    assert lat.num_states > 8000
    got = distinct_word_sequences(lat, 100, 20.0)
    # reference: the 20000 best paths (not distinct) of the epsilon-free acceptor, each sequence at its best
    # path; exact for every sequence cheaper than the 20000th path
    acc = _word_acceptor(lat)
    acc.rmepsilon(weight=20.0)
    paths = _linear_paths(pywrapfst.shortestpath(acc, nshortest=20000, weight=20.0))
    best: dict = {}
    for seq, cost in paths:
        best[seq] = min(cost, best.get(seq, math.inf))
    want = sorted((c, s) for s, c in best.items())[:100]
    assert len(want) == 100 and want[-1][0] < max(c for _, c in paths)  # the reference covers the 100-best
    assert [s for _, s in sorted((c, s) for s, c in got)] == [s for _, s in want]
    assert np.allclose(sorted(c for _, c in got), [c for c, _ in want], atol=1e-3)
    assert max(c for _, c in got) - min(c for _, c in got) > 8.0  # beyond what a width-8 pass could list
    full = CtcWfstDecoder(toy, LMParams(acoustic_scale=0.3, blank_penalty=1.0, lattice_beam=20.0,
                                        lattice_max_arcs=10**7))  # the uncapped n-best (the cap: 3000 arcs)
    full.accept_logits(logits)
    out = full.finalize()
    assert len(out) == 100 and out[0].sentence == "i need some water"
