"""The original's OPT path: ``--opt_model <folder>`` with a tiny OPT built locally (random weights, a word-level
tokenizer made here, no hub) rescores the n-best, and every candidate's causal-LM score equals a direct
computation with the attention mask (the original's right-padded batch), for both scoring methods."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from language_model.graph.toy_lm import build_toy_lm, synthetic_logits  # noqa: E402
from language_model.serving.args import build_parser  # noqa: E402
from language_model.serving.service import LMService  # noqa: E402
from nejm_b2txt_utils.lm_params import LMParams  # noqa: E402
from tests.language_model._lm_testing import make_tiny_causal_lm  # noqa: E402


def direct_scores(folder, texts: list[str]) -> list[float]:
    """Sum of log p(token | prefix) after OPT's BOS, from a padded batch and its attention mask."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    enc = tok(texts, return_tensors="pt", padding=True)
    assert (enc.input_ids[:, 0] == tok.bos_token_id).all()  # OPT's tokenizer prepends </s>
    with torch.no_grad():
        logp = torch.log_softmax(model(**enc).logits.double(), -1)
    target = logp[:, :-1].gather(-1, enc.input_ids[:, 1:, None])[..., 0]
    return (target * enc.attention_mask[:, 1:]).sum(1).tolist()


@pytest.mark.parametrize("scoring", ["tree", "batch"])
def test_opt_model_folder_scores_equal_the_masked_batch(tmp_path, scoring):
    folder = make_tiny_causal_lm(tmp_path / "tiny_opt", add_bos=True)
    lm = build_toy_lm(tmp_path / "toy")
    args = build_parser().parse_args(["--lm_path", str(lm), "--opt_model", str(folder), "--do_opt", "--gpu_number",
                                      "-1", "--acoustic_scale", "0.325", "--blank_penalty", "90", "--alpha", "0.5",
                                      "--llm_scoring", scoring, "--llm_dtype", "float32"])  # fp32: exact equality
    params = LMParams.from_namespace(args)
    service = LMService(args.lm_path, args.opt_model, args.opt_cache_dir, params)
    service.ensure_components(params)
    assert service.scorer.method == scoring
    decoder = service.new_decoder(params)
    decoder.accept_logits(synthetic_logits("i need some water", seed=3, peak=2.0))
    result = service.finalize(decoder, params)
    texts = [c.sentence for c in result.candidates]
    assert len(texts) > 3 and len(set(texts)) == len(texts)
    want = direct_scores(folder, texts)
    assert [c.llm for c in result.candidates] == pytest.approx(want, abs=1e-4)
    for c in result.candidates:
        assert c.total == pytest.approx(0.325 * c.ac + 0.5 * c.lm + 0.5 * c.llm, abs=1e-6)
    assert result.sentence == max(result.candidates, key=lambda c: c.total).sentence
