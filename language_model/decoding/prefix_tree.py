"""Causal-LM scores of many sentences from forward passes over their token prefix tree.

An n-best list is mostly the same sentence with a word or two changed, so the padded batch the original
scored (``N`` rows x longest sentence) repeats the shared prefixes ``N`` times. Here the token sequences
are merged into a prefix tree (trie) and the model runs over its nodes as one sequence in which each node
attends only to itself and its ancestors (a custom 4-D attention mask) at the position of its depth. A
node's hidden state is then exactly the one it has in its own sentence's row, so ``log p(token | prefix)``
is the same number the padded batch gives, up to float rounding.

Only nodes with children are fed: the last token of a sentence predicts nothing (the original scores no
EOS), so leaves cost nothing. For a 100-best this is typically 3-6x fewer positions than the padded batch.
The LM head (49k words for SmolLM2) runs on the fed nodes in row chunks, with the log-softmax in float32
whatever the model's dtype, and only the log-probabilities of the tree's edges are kept.

:class:`TreeForward` evaluates the nodes in rounds that share one KV cache (a later round's nodes attend to
their ancestors of earlier rounds through a ``[1, 1, new, past + new]`` mask); evaluating a node gives the
log-probability of every edge that leaves it, i.e. of the next token of every sentence through it.
:func:`tree_token_logprobs` is one round over every node; :func:`pruned_tree_scores` is the exact pruning
of the n-best ("drop candidates that cannot win"; see there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from language_model.decoding.llama_forward import LlamaTreeForward

#: Fed nodes per LM-head chunk (bounds the float32 ``[chunk, vocabulary]`` logits: 25 MB for SmolLM2).
HEAD_CHUNK = 128
#: In bfloat16/float16 a round's length is padded up to a multiple of this: oneDNN builds a kernel per new
#: matrix shape (measured ~2x the forward's time when every call has a new length), so a few lengths recur.
PAD_MULTIPLE = 32


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
        mask[np.arange(m), np.arange(m)] = True
        for depth in range(1, int(self.depths.max(initial=0)) + 1):  # one row copy per level, parents first
            level = np.flatnonzero(self.depths == depth)
            mask[level] |= mask[self.parents[level]]
        return mask

    def edge_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The edges of every sequence, flattened.

        Returns:
            ``(sequence, node, next_token)``, each ``[E]`` int64 with ``E = sum(len(e) for e in edges)``,
            sequence by sequence in path order.
        """
        seq = np.repeat(np.arange(len(self.edges)), [len(p) for p in self.edges])
        flat = np.asarray([e for path in self.edges for e in path], dtype=np.int64).reshape(-1, 2)  # [E, 2]
        return seq.astype(np.int64), flat[:, 0], flat[:, 1]


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


class TreeForward:
    """Evaluates the nodes of one :class:`PrefixTree` in rounds, keeping the edges' log-probabilities.

    A round is padded (in bfloat16/float16) to a multiple of :data:`PAD_MULTIPLE` positions with dummy
    nodes that see only themselves; their outputs are ignored.

    Attributes:
        evaluated: ``[M]`` bool, the nodes fed so far.
        edge_seq, edge_node, edge_tok: ``[E]`` the flattened edges (:meth:`PrefixTree.edge_arrays`).
        edge_lp: ``[E]`` float64 ``log p(next token | node's prefix)``; NaN while the node is not evaluated.
        n_forwards: forward passes run.
    """

    def __init__(self, model, tree: PrefixTree, device: str = "cpu", keep_cache: bool = True,
                 use_lean: bool = True):
        """Prepare the rounds (nothing is run yet).

        Args:
            model: a Hugging Face causal LM whose logits are ``get_output_embeddings()`` of ``base_model``'s
                last hidden state and that takes ``position_ids``, a 4-D float attention mask and a ``cache``
                (Llama-family models such as SmolLM2, OPT, GPT-2).
            tree: from :func:`build_prefix_tree`.
            device: where ``model`` is.
            keep_cache: keep the KV cache for later rounds (off for a single round: less copying).
            use_lean: run a plain Llama (SmolLM2) through
                :class:`~language_model.decoding.llama_forward.LlamaTreeForward` (fused projections); False: the
                Hugging Face forward always.
        """
        import torch

        self.model, self.tree, self.device, self.keep_cache = model, tree, device, keep_cache
        self.lean = LlamaTreeForward.for_model(model) if use_lean else None
        self.dtype = next(model.parameters()).dtype
        self.allowed = torch.from_numpy(tree.ancestor_mask())  # [M, M]
        self.kv_nodes = np.zeros(0, dtype=np.int64)  # node of each KV-cache slot in feeding order, -1: padding
        self.pad_multiple = 1 if self.dtype == torch.float32 else PAD_MULTIPLE
        self.cache = None
        self.evaluated = np.zeros(len(tree.tokens), dtype=bool)
        self.edge_seq, self.edge_node, self.edge_tok = tree.edge_arrays()
        self.edge_lp = np.full(len(self.edge_node), np.nan)
        self.n_forwards = 0

    def evaluate(self, nodes: np.ndarray) -> None:
        """Feed ``nodes`` (those not evaluated yet) in one forward pass and fill the edges leaving them.

        Args:
            nodes: node ids; with the nodes evaluated before, they must contain each one's ancestors.

        Raises:
            ValueError: a node whose parent is neither evaluated nor in ``nodes``.
        """
        import torch

        nodes = np.unique(np.asarray(nodes, dtype=np.int64))  # ids are parents-first: a valid feeding order
        nodes = nodes[~self.evaluated[nodes]]
        if len(nodes) == 0:
            return
        parents = self.tree.parents[nodes]
        reachable = (parents < 0) | self.evaluated[np.maximum(parents, 0)] | np.isin(parents, nodes)
        if not reachable.all():
            raise ValueError(f"prefix tree: node {int(nodes[~reachable][0])} is fed before its parent")
        n_pad = -len(nodes) % self.pad_multiple
        fed = np.concatenate([nodes, np.full(n_pad, -1, dtype=np.int64)])  # [new], -1: padding
        cols = np.concatenate([self.kv_nodes, fed])  # [past + new]
        real_rows, real_cols = torch.from_numpy(fed >= 0), torch.from_numpy(cols >= 0)
        allowed = self.allowed[torch.from_numpy(np.maximum(fed, 0))][:, torch.from_numpy(np.maximum(cols, 0))]
        allowed &= real_rows[:, None] & real_cols[None, :]  # [new, past + new]
        allowed[:, len(self.kv_nodes):].diagonal()[:] = True  # every fed position sees itself (padding: only that)
        mask = torch.zeros(allowed.shape, dtype=self.dtype)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        real = np.maximum(fed, 0)
        ids = torch.from_numpy(self.tree.tokens[real]).to(self.device)  # [new]
        positions = torch.from_numpy(np.where(fed >= 0, self.tree.depths[real], 0)).to(self.device)  # [new]
        mask = mask.to(self.device)  # [new, all]
        row_of = np.full(len(self.tree.tokens), -1, dtype=np.int64)
        row_of[nodes] = np.arange(len(nodes))
        sel = np.flatnonzero(row_of[self.edge_node] >= 0)  # the edges leaving the new nodes
        rows = torch.from_numpy(row_of[self.edge_node[sel]])
        toks = torch.from_numpy(self.edge_tok[sel]).to(self.device)
        head = self.model.get_output_embeddings()
        with torch.inference_mode():
            hidden = self._hidden(ids, positions, mask)  # [new, H]
            lp = torch.empty(len(sel), dtype=torch.float64)
            for a in range(0, len(fed), HEAD_CHUNK):
                logits = head(hidden[a : a + HEAD_CHUNK]).float()  # [chunk, V], log-softmax in float32
                lse = torch.logsumexp(logits, dim=-1)  # [chunk]
                here = torch.nonzero((rows >= a) & (rows < a + HEAD_CHUNK))[:, 0]
                r = rows[here].to(self.device) - a
                lp[here] = (logits[r, toks[here.to(self.device)]] - lse[r]).double().cpu()
        self.edge_lp[sel] = lp.numpy()
        self.evaluated[nodes] = True
        self.kv_nodes = np.concatenate([self.kv_nodes, fed]) if self.keep_cache else self.kv_nodes
        self.n_forwards += 1

    def _hidden(self, ids, positions, mask):
        """Last hidden states ``[new, H]`` of the fed positions (the lean Llama forward where it applies)."""
        if self.lean is not None:
            if self.keep_cache and self.cache is None:
                self.cache = []
            return self.lean.hidden(ids, positions, mask, self.cache if self.keep_cache else None)
        kwargs = {"input_ids": ids[None], "position_ids": positions[None], "attention_mask": mask[None, None],
                  "use_cache": self.keep_cache}  # mask [1, 1, new, all]
        if self.keep_cache:
            from transformers import DynamicCache

            self.cache = self.cache if self.cache is not None else DynamicCache()
            kwargs["cache"] = self.cache
        return self.model.base_model(**kwargs).last_hidden_state[0]

    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per sequence, the sum of its known edges and whether all are known.

        Returns:
            ``(partial [N] float64, complete [N] bool)``; a sequence without edges is complete with 0.
        """
        n = len(self.tree.edges)
        unknown = np.isnan(self.edge_lp)
        partial = np.bincount(self.edge_seq, weights=np.where(unknown, 0.0, self.edge_lp), minlength=n)
        return partial, np.bincount(self.edge_seq, weights=unknown, minlength=n) == 0

    def path_nodes(self, seqs: np.ndarray) -> np.ndarray:
        """The nodes on the paths of sequences ``seqs``.

        Args:
            seqs: sequence indices.

        Returns:
            ``[K]`` node ids (with repeats).
        """
        return self.edge_node[np.isin(self.edge_seq, seqs)]


def tree_token_logprobs(model, tree: PrefixTree, device: str = "cpu") -> list[float]:
    """Sum of ``log p(next token | prefix)`` along each sequence of ``tree``, from one forward pass.

    Args:
        model: as :class:`TreeForward`.
        tree: from :func:`build_prefix_tree`.
        device: where ``model`` is.

    Returns:
        One natural-log sum per sequence (0.0 for a sequence of one token).
    """
    fwd = TreeForward(model, tree, device, keep_cache=False)
    fwd.evaluate(np.arange(len(tree.tokens)))
    return fwd.sums()[0].tolist()


def pruned_tree_scores(model, tree: PrefixTree, base: np.ndarray, weight: float, offset: np.ndarray,
                       first_round: int = 8, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, TreeForward]:
    """Exact n-best pruning: score only the sequences that can still have the best total.

    A sequence's total is ``base + weight * (S + offset)`` with ``S`` the sum of its edges' log-probabilities,
    each <= 0, and ``offset`` known beforehand (``-n_tokens * length_penalty``, of either sign). Evaluating a
    node gives every edge leaving it, also those of sequences not being scored, so after a round each
    sequence has ``S <= partial`` (its known edges, 0 for the rest) and ``total <= bound = base + weight *
    (partial + offset)`` (``weight >= 0``). Round 1 evaluates the paths of the ``first_round`` sequences with
    the best ``base``, which fixes ``B``, the best exact total; round 2 evaluates (reusing round 1's KV
    cache) the rest of every sequence whose bound is still ``>= B``. A sequence with ``bound < B`` cannot be
    the best and is not scored further, so the best sequence is exactly the one full scoring picks.

    How much it drops depends on how far the non-LLM parts spread compared with a sentence's LLM score: on the
    1-gram's 100-best with SmolLM2 (alpha 0.55, ~130 candidates, ~350 nodes) the unknown tail of a sentence is
    worth tens of nats, so even with the winner's exact total over 90 % of the candidates keep a bound above it;
    measured: ~14 % of the candidates and ~5 % of the nodes dropped, for a second forward pass. It pays off
    where the non-LLM part separates the candidates (a peaked n-best, a small ``weight``, ``weight == 0``).

    Args:
        model: as :class:`TreeForward`.
        tree: from :func:`build_prefix_tree`, ``N`` sequences.
        base: ``[N]`` the part of each total that is not the LM (e.g. ``acoustic_scale*ac + (1-alpha)*lm``).
        weight: the LM's weight (``alpha``), >= 0.
        offset: ``[N]`` added to each LM score (e.g. ``-n_tokens * length_penalty``).
        first_round: sequences scored in round 1 (>= 1).
        device: where ``model`` is.

    Returns:
        ``(score [N], exact [N] bool, forward)``: ``score = S + offset`` where ``exact``, else the upper
        bound ``partial + offset`` that pruned it (its total ``base + weight*score`` is then ``< B``);
        ``forward`` tells how many nodes were evaluated (``forward.evaluated.sum()``) in how many passes.

    Raises:
        ValueError: ``weight < 0`` or ``first_round < 1`` (the bound would not hold).
    """
    if weight < 0 or first_round < 1:
        raise ValueError(f"pruned_tree_scores: weight={weight}, first_round={first_round}; expected >= 0, >= 1")
    base, offset = np.asarray(base, dtype=np.float64), np.asarray(offset, dtype=np.float64)
    fwd = TreeForward(model, tree, device)
    order = np.argsort(-base, kind="stable")
    fwd.evaluate(fwd.path_nodes(order[:first_round]))
    partial, complete = fwd.sums()
    bound = base + weight * (partial + offset)
    best = bound[complete].max()  # the first round's sequences are complete
    todo = np.flatnonzero(~complete & (bound >= best))
    if len(todo):
        fwd.evaluate(fwd.path_nodes(todo))
        partial, complete = fwd.sums()
    return partial + offset, complete, fwd
