"""beam_acoustic_scale: beams keep their acoustic width when the acoustic scale changes; 0 keeps the original."""

from __future__ import annotations

import pytest

pytest.importorskip("kaldi_decoder")

from language_model.decoding.wfst import CtcWfstDecoder, LMResources  # noqa: E402
from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    return LMResources(build_toy_lm(tmp_path_factory.mktemp("toy") / "lm"))


def nbest(resources, **kw):
    dec = CtcWfstDecoder(resources, LMParams(blank_penalty=1.0, nbest=50, **kw))
    dec.accept_logits(synthetic_logits("i need some water", seed=2, peak=3.0))
    return dec, dec.finalize()


def test_beams_scale_with_the_acoustic_scale(resources):
    plain = CtcWfstDecoder(resources, LMParams(acoustic_scale=3.0, beam=17.0, lattice_beam=8.0))
    assert plain.beam_factor == 1.0 and plain.lattice_pass_beam == pytest.approx(13.0)  # the original: cost units
    scaled = CtcWfstDecoder(resources, LMParams(acoustic_scale=3.0, beam=17.0, lattice_beam=8.0,
                                                beam_acoustic_scale=0.3))
    assert scaled.beam_factor == pytest.approx(10.0) and scaled.lattice_pass_beam == pytest.approx(17.0)  # capped
    uncapped = CtcWfstDecoder(resources, LMParams(acoustic_scale=3.0, beam=17.0, lattice_beam=8.0,
                                                  beam_acoustic_scale=0.3, lattice_pass_max_beam=1000.0))
    assert uncapped.lattice_pass_beam == pytest.approx(130.0)
    # a narrow beam at 0.3 finds the sentence; at 10x the scale the same beam in cost units loses it,
    # and the same beam given at 0.3 finds it again
    # beam 2 (lattice pass 1.5) at 0.3 is wide enough for the best path; at 10x the scale, the same numbers in
    # cost units lose it (a worse alignment of the same words wins: a search error), given at 0.3 they keep it
    kw = dict(beam=2.0, lattice_pass_margin=1.0, lattice_beam=0.5)
    _, wide = nbest(resources, acoustic_scale=3.0, beam=40.0, lattice_pass_margin=40.0, lattice_beam=0.5)
    _, starved = nbest(resources, acoustic_scale=3.0, **kw)
    _, kept = nbest(resources, acoustic_scale=3.0, beam_acoustic_scale=0.3, **kw)
    assert wide[0].sentence == kept[0].sentence == "i need some water"
    assert kept[0].total == pytest.approx(wide[0].total, abs=1e-3)
    assert starved[0].total < wide[0].total - 1.0



def test_lattice_pass_cap_bounds_the_search(resources):
    """beam 1000 + lattice_pass_margin 1000 made the lattice pass search with beam 1000 (most of a large graph),
    and beam_acoustic_scale 0.01 at acoustic_scale 30 multiplied it by 3000; the cap keeps it at 17 cost units
    whatever the other settings say (the default 13 is below it), and the 1-best at scale 0.3 is unchanged here."""
    wide = dict(blank_penalty=1.0, beam=1000.0, lattice_pass_margin=1000.0, lattice_beam=8.0)
    beams, best = [], []
    for params in (LMParams(blank_penalty=1.0), LMParams(lattice_pass_max_beam=1000.0, **wide), LMParams(**wide),
                   LMParams(acoustic_scale=30.0, beam_acoustic_scale=0.01, **wide)):
        dec = CtcWfstDecoder(resources, params)
        dec.accept_logits(synthetic_logits("i need some water", seed=2, peak=3.0))
        beams.append(dec.lattice_pass_beam)
        best.append(dec.finalize()[0].sentence)
    assert beams == [13.0, 1000.0, 17.0, 17.0]
    assert best[:3] == ["i need some water"] * 3  # (at acoustic scale 30 the LM barely counts: another sentence)
