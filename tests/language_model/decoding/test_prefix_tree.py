"""Prefix-tree causal-LM scoring: the trie's shape, and scores equal to the original's padded batch."""

from __future__ import annotations

import numpy as np
import pytest

from language_model.decoding.prefix_tree import build_prefix_tree

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from language_model.decoding.llm_rescore import CausalLMScorer  # noqa: E402
from tests.language_model._lm_testing import make_tiny_causal_lm  # noqa: E402

NBEST = ["i need water", "i need some water", "i need water now", "i want water", "please help me",
         "i need", "i", "i need water"]


def test_tree_shares_prefixes_and_skips_leaves():
    rows = [[1, 5, 6, 7], [1, 5, 6, 8], [1, 5, 9], [1, 5, 6, 7, 3], [1]]
    tree = build_prefix_tree(rows)
    # fed nodes: 1, 1-5, 1-5-6, 1-5-6-7 (a prefix of row 3); leaves 8, 9, 3 are never fed
    assert tree.tokens.tolist() == [1, 5, 6, 7]
    assert tree.parents.tolist() == [-1, 0, 1, 2]
    assert tree.depths.tolist() == [0, 1, 2, 3]
    assert tree.edges[0] == [(0, 5), (1, 6), (2, 7)] and tree.edges[2] == [(0, 5), (1, 9)]
    assert tree.edges[3][-1] == (3, 3) and tree.edges[4] == []
    branching = build_prefix_tree([[1, 2, 3, 4], [1, 7, 3, 4]])
    assert branching.tokens.tolist() == [1, 2, 3, 7, 3]  # suffixes after a different word are not shared
    mask = branching.ancestor_mask()
    assert mask[4].tolist() == [True, False, False, True, True]  # node 4 sees 1 -> 7 -> itself only
    assert mask.sum() == 1 + 2 + 3 + 2 + 3


@pytest.fixture(scope="module", params=[True, False], ids=["opt_bos", "no_bos"])
def model_dir(request, tmp_path_factory):
    return make_tiny_causal_lm(tmp_path_factory.mktemp("lm") / "tiny", add_bos=request.param)


def test_tree_scores_equal_the_padded_batch(model_dir):
    tree = CausalLMScorer.load(str(model_dir), method="tree")
    batch = CausalLMScorer.load(str(model_dir), method="batch")
    for lp in (0.0, 0.4):
        want = batch.score(NBEST, length_penalty=lp)
        got = tree.score(NBEST, length_penalty=lp)
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.all(np.isfinite(got)) and got[0] == got[-1]  # a duplicate scores the same
    rows = tree._rows(NBEST)
    assert len(build_prefix_tree(rows).tokens) < sum(len(r) - 1 for r in rows) / 2
    with pytest.raises(ValueError, match="tree, batch"):
        CausalLMScorer(tree.model, tree.tok, method="beam")
