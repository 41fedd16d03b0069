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
    assert scaled.beam_factor == pytest.approx(10.0) and scaled.lattice_pass_beam == pytest.approx(130.0)
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
