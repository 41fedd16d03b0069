"""The lean Llama forward of the prefix-tree scoring equals the Hugging Face forward."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from language_model.decoding.llama_forward import LlamaTreeForward  # noqa: E402
from language_model.decoding.llm_rescore import CausalLMScorer  # noqa: E402
from language_model.decoding.prefix_tree import TreeForward, build_prefix_tree, tree_token_logprobs  # noqa: E402
from tests.language_model._lm_testing import make_tiny_causal_lm, make_tiny_llama  # noqa: E402
from tests.language_model.decoding.test_llm_prune import random_nbest  # noqa: E402


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return CausalLMScorer.load(str(make_tiny_llama(tmp_path_factory.mktemp("lm") / "llama")), dtype="float32")


def tree_sums(model, tree, use_lean: bool, rounds: int = 1) -> np.ndarray:
    fwd = TreeForward(model, tree, keep_cache=rounds > 1, use_lean=use_lean)
    cuts = np.linspace(0, len(tree.tokens), rounds + 1).astype(int)
    for a, b in zip(cuts[:-1], cuts[1:]):  # ids are parents-first: each prefix of them is a valid round
        fwd.evaluate(np.arange(a, b))
    partial, complete = fwd.sums()
    assert complete.all() and fwd.n_forwards == rounds
    return partial


def test_lean_forward_equals_the_hugging_face_forward(llama):
    assert LlamaTreeForward.supports(llama.model)
    tree = build_prefix_tree(llama._rows(random_nbest(np.random.default_rng(0), 40)))
    hf = tree_sums(llama.model, tree, use_lean=False)
    assert np.ptp(hf) > 1.0  # the sentences score differently: a real comparison
    np.testing.assert_allclose(tree_sums(llama.model, tree, use_lean=True), hf, atol=1e-4)
    # the KV-cached rounds of the pruning pass (with the bfloat16 padding exercised)
    fwd = TreeForward(llama.model, tree)
    fwd.pad_multiple = 5
    fwd.evaluate(np.arange(len(tree.tokens) // 3))
    fwd.evaluate(np.arange(len(tree.tokens)))
    assert fwd.lean is not None and len(fwd.cache) == 2 and fwd.cache[0][0].shape[1] == len(fwd.kv_nodes)
    np.testing.assert_allclose(fwd.sums()[0], hf, atol=1e-4)
    np.testing.assert_allclose(tree_sums(llama.model, tree, use_lean=True, rounds=3), hf, atol=1e-4)
    # and the original's padded batch, through the scorer
    llama.method = "batch"
    try:
        batch = llama.score(random_nbest(np.random.default_rng(0), 40))
    finally:
        llama.method = "tree"
    np.testing.assert_allclose(np.array(tree_token_logprobs(llama.model, tree)), batch, atol=1e-4)


def test_fused_weights_are_shared_and_follow_a_dtype_change(llama):
    lean = LlamaTreeForward.for_model(llama.model)
    assert LlamaTreeForward.for_model(llama.model) is lean  # built once per model
    layer, qkv, gate_up = lean.layers[0]
    att, mlp = layer.self_attn, layer.mlp
    # the model's projections are slices of the fused weights: nothing is held twice
    assert att.q_proj.weight.data_ptr() == qkv.data_ptr()
    assert att.v_proj.weight.data_ptr() == qkv[att.q_proj.weight.shape[0] + att.k_proj.weight.shape[0]:].data_ptr()
    assert mlp.up_proj.weight.data_ptr() == gate_up[mlp.gate_proj.weight.shape[0]:].data_ptr()
    tree = build_prefix_tree(llama._rows(random_nbest(np.random.default_rng(1), 25)))
    fp32 = tree_sums(llama.model, tree, use_lean=False)
    llama.model.to(torch.bfloat16)  # new tensors: the lean forward must re-fuse, not use the float32 copies
    try:
        bf16_hf = tree_sums(llama.model, tree, use_lean=False)
        bf16_lean = tree_sums(llama.model, tree, use_lean=True)
        assert lean.layers[0][1].dtype == torch.bfloat16
    finally:
        llama.model.to(torch.float32)
    np.testing.assert_allclose(bf16_lean, bf16_hf, atol=0.5)
    np.testing.assert_allclose(bf16_lean, fp32, atol=0.5)
    # back in float32 (the weights now carry bfloat16's rounding): re-fused again, equal to HF
    np.testing.assert_allclose(tree_sums(llama.model, tree, use_lean=True),
                               tree_sums(llama.model, tree, use_lean=False), atol=1e-4)
    assert lean.layers[0][1].dtype == torch.float32


def test_other_architectures_keep_the_hugging_face_forward(tmp_path):
    opt = CausalLMScorer.load(str(make_tiny_causal_lm(tmp_path / "opt")), dtype="float32")
    assert not LlamaTreeForward.supports(opt.model) and LlamaTreeForward.for_model(opt.model) is None
    scaled = CausalLMScorer.load(str(make_tiny_llama(tmp_path / "scaled", rope_scaling={"rope_type": "linear",
                                                                                        "factor": 2.0})),
                                 dtype="float32")
    assert not LlamaTreeForward.supports(scaled.model)
    biased = CausalLMScorer.load(str(make_tiny_llama(tmp_path / "bias", attention_bias=True)), dtype="float32")
    assert not LlamaTreeForward.supports(biased.model)
    tree = build_prefix_tree(scaled._rows(random_nbest(np.random.default_rng(2), 10)))
    assert TreeForward(scaled.model, tree).lean is None  # the scaled RoPE still scores through HF
