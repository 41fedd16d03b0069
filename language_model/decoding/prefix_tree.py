"""Causal-LM scores of many sentences in one forward pass over their token prefix tree.

An n-best list is mostly the same sentence with a word or two changed, so the padded batch the original
scored (``N`` rows x longest sentence) repeats the shared prefixes ``N`` times. Here the token sequences
are merged into a prefix tree (trie) and the model runs once over its nodes, as one sequence in which
each node attends only to itself and its ancestors (a custom 4-D attention mask) at the position of its
depth. A node's hidden state is then exactly the one it has in its own sentence's row, so
``log p(token | prefix)`` is the same number the padded batch gives, up to float rounding.

Only nodes with children are fed: the last token of a sentence predicts nothing (the original scores no
EOS), so leaves cost nothing. For a 100-best this is typically 3-6x fewer positions than the padded batch,
and the LM head (49k words for SmolLM2) runs on those positions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PrefixTree:
    """The trie of a set of token sequences, restricted to the nodes that predict a next token.

    Attributes:
        tokens: ``[M]`` token id of each fed node (parents before children).
        parents: ``[M]`` index of the parent node, -1 for a root.
        depths: ``[M]`` position of the node in its sentence (0 for the first token).
        edges: per sequence, the ``(node, next token)`` pairs whose log-probabilities sum to its score.
    """

    tokens: np.ndarray
    parents: np.ndarray
    depths: np.ndarray
    edges: list[list[tuple[int, int]]]

    def ancestor_mask(self) -> np.ndarray:
        """``[M, M]`` bool: ``mask[i, j]`` is True when node ``j`` is ``i`` or one of its ancestors."""
        m = len(self.tokens)
        mask = np.zeros((m, m), dtype=bool)
        for i, p in enumerate(self.parents):
            if p >= 0:
                mask[i] = mask[p]
            mask[i, i] = True
        return mask


def build_prefix_tree(rows: list[list[int]]) -> PrefixTree:
    """Merge token sequences into a prefix tree of the nodes that have a successor.

    Args:
        rows: ``N`` token id sequences (each with its BOS, if any, first).

    Returns:
        The :class:`PrefixTree`; ``edges[n]`` has ``len(rows[n]) - 1`` pairs (none for a 1-token row).
    """
    index: dict[tuple[int, int], int] = {}
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    edges: list[list[tuple[int, int]]] = []
    for row in rows:
        parent, path = -1, []
        for depth, tok in enumerate(row[:-1]):  # the last token is only predicted, never fed
            key = (parent, int(tok))
            node = index.get(key)
            if node is None:
                node = index[key] = len(tokens)
                tokens.append(int(tok))
                parents.append(parent)
                depths.append(depth)
            path.append((node, int(row[depth + 1])))
            parent = node
        edges.append(path)
    return PrefixTree(np.asarray(tokens, dtype=np.int64), np.asarray(parents, dtype=np.int64),
                      np.asarray(depths, dtype=np.int64), edges)


def tree_token_logprobs(model, tree: PrefixTree, device: str = "cpu") -> list[float]:
    """Sum of ``log p(next token | prefix)`` along each sequence of ``tree``, from one forward pass.

    Args:
        model: a Hugging Face causal LM that takes ``position_ids`` and a 4-D attention mask (Llama-family
            models such as SmolLM2, OPT, GPT-2).
        tree: from :func:`build_prefix_tree`.
        device: where ``model`` is.

    Returns:
        One natural-log sum per sequence (0.0 for a sequence of one token).
    """
    import torch

    if len(tree.tokens) == 0:
        return [0.0] * len(tree.edges)
    dtype = next(model.parameters()).dtype
    allowed = torch.from_numpy(tree.ancestor_mask()).to(device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    ids = torch.from_numpy(tree.tokens)[None].to(device)
    pos = torch.from_numpy(tree.depths)[None].to(device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask[None, None], position_ids=pos, use_cache=False).logits[0]
        logits = logits.float()
        lse = torch.logsumexp(logits, dim=-1)
        flat = [(n, t) for path in tree.edges for n, t in path]
        if not flat:
            return [0.0] * len(tree.edges)
        nodes = torch.tensor([n for n, _ in flat], device=device)
        nxt = torch.tensor([t for _, t in flat], device=device)
        lp = (logits[nodes, nxt] - lse[nodes]).double().cpu().numpy()
    out, k = [], 0
    for path in tree.edges:
        out.append(float(lp[k : k + len(path)].sum()))
        k += len(path)
    return out
