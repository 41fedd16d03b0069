"""Causal-LM rescoring of the n-best (the original's OPT step, ``--do_opt``; spec §4.9).

``load_causal_lm(name)`` resolves ``--opt_model``: the keyword ``smollm2`` (the embedded SmolLM2-135M,
converted once by :mod:`language_model.decoding.smollm2`), a local Hugging Face folder, or a hub id that is
already in the local Hugging Face cache. Nothing is downloaded (``HF_HUB_OFFLINE=1``); a hub id that
is not cached fails at once with a one-line :class:`LLMUnavailableError`.

``CausalLMScorer.score(texts)`` is the original's ``rescore_with_gpt2``: natural-log sum of the token
log-probabilities after a BOS token (no EOS term) minus ``n_tokens * length_penalty``, where
``n_tokens`` counts the BOS as the original's attention-mask sum does. By default the sentences go through
the model as one prefix tree (:mod:`language_model.decoding.prefix_tree`: shared prefixes computed once,
leaves not fed); ``method="batch"`` keeps the original's right-padded batch (same scores). On failure (e.g.
out of memory) it retries in 5 sub-batches, then gives zeros, as the original. The weights are loaded in
``--llm_dtype`` (:func:`resolve_dtype`: ``auto`` = float16 on CUDA, bfloat16 on a CPU with AMX or
AVX512-BF16, else float32); the log-softmax is always float32.

``rescore_nbest`` is ``gpt2_lm_decode``: context prefix and the handwriting-era punctuation clean-up,
then ``total = acoustic_scale*ac + (1-alpha)*ngram + alpha*llm``. Fixed: the original dropped empty
hypotheses from the score arrays but not from the rows, so one empty candidate shifted every later
LLM/total score onto the wrong sentence; here empty hypotheses are left out of the rows too. With
``prune`` (``--llm_prune 1``, tree scoring) candidates that provably cannot win are not scored to the end
(:func:`~language_model.decoding.prefix_tree.pruned_tree_scores`); the best sentence is the same, and a
dropped candidate's ``llm`` is the upper bound that dropped it, its ``total`` that bound's total (below the
best's). With ``top_k`` (``--llm_top_k``, default 50 in the server's table) only the first pass's ``k`` best
candidates are scored and returned (:func:`top_k_candidates`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from language_model.decoding.prefix_tree import build_prefix_tree, pruned_tree_scores, tree_token_logprobs
from nejm_b2txt_utils.hypothesis import Hypothesis

log = logging.getLogger(__name__)

#: ``--opt_model`` default: the original's model (needs a local copy or a populated HF cache).
DEFAULT_OPT_MODEL = "facebook/opt-6.7b"
#: How sentences are scored: one pass over their prefix tree, or the original's padded batch (same numbers).
SCORING_METHODS = ("tree", "batch")
#: ``--opt_model`` keyword for the embedded SmolLM2-135M.
EMBEDDED_MODEL = "smollm2"
#: ``--llm_dtype`` values.
LLM_DTYPES = ("auto", "float32", "bfloat16", "float16")
#: Candidates scored in full in the first pruning round (the best by their non-LLM part).
PRUNE_FIRST_ROUND = 8


def cpu_has_fast_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16, which oneDNN uses).

    Args:
        cpuinfo: the Linux CPU description to read (its ``flags``).

    Returns:
        True when ``amx_bf16`` or ``avx512_bf16`` is among the flags; False elsewhere (e.g. not Linux).
    """
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(name: str, device: str):
    """``--llm_dtype`` -> a torch dtype.

    Args:
        name: one of :data:`LLM_DTYPES`.
        device: ``cpu`` or ``cuda:N``.

    Returns:
        ``auto``: float16 on CUDA, bfloat16 on a CPU with :func:`cpu_has_fast_bf16`, else float32;
        otherwise the named dtype.

    Raises:
        ValueError: an unknown name.
    """
    import torch

    if name not in LLM_DTYPES:
        raise ValueError(f"llm_dtype={name!r}: expected one of {', '.join(LLM_DTYPES)}")
    if name == "auto":
        if device.startswith("cuda"):
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return getattr(torch, name)


class LLMUnavailableError(RuntimeError):
    """The requested causal LM cannot be loaded offline."""


def resolve_model_path(name: str, cache_dir: str | None = None) -> str:
    """``--opt_model`` -> something ``from_pretrained`` can open offline.

    Args:
        name: ``smollm2``, a local Hugging Face folder, or a hub id.
        cache_dir: the Hugging Face cache to look in (default: the standard one).

    Returns:
        A folder path or a hub id that is in the cache.

    Raises:
        LLMUnavailableError: none of the three (nothing is ever downloaded).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name.lower() == EMBEDDED_MODEL:
        from language_model.decoding.smollm2 import ensure_smollm2

        return str(ensure_smollm2())
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise LLMUnavailableError(
                f"--opt_model {name}: folder has no config.json (not a Hugging Face model)"
            )
        return str(local)
    if name.startswith(("/", "./", "../", "~")) or local.exists():  # meant as a path, not a hub id
        raise LLMUnavailableError(f"--opt_model {name}: no such folder (expected a local Hugging Face model "
                                  f"folder with config.json, a cached hub id, or {EMBEDDED_MODEL})")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
    except ValueError as exc:  # not a valid hub id either
        raise LLMUnavailableError(f"--opt_model {name}: neither a local folder nor a valid hub id ({exc})") from None
    if isinstance(cached, str):
        return name
    raise LLMUnavailableError(
        f"causal LM {name!r} is neither a local folder nor in the Hugging Face cache"
        f"{f' ({cache_dir})' if cache_dir else ''} and this setup never downloads: use --opt_model "
        f"{EMBEDDED_MODEL} (embedded SmolLM2-135M) or --opt_model /path/to/a/local/model"
    )


class CausalLMScorer:
    """Sentence log-probabilities from a Hugging Face causal LM.

    Attributes:
        last_stats: what the last :meth:`score` / :meth:`score_pruned` did: ``candidates``, ``nodes`` (of the
            prefix tree), ``nodes_evaluated``, ``scored`` (candidates scored to the end), ``forwards``.
        last_exact: ``[N]`` bool, which of the last call's scores are exact (not a pruning bound).
    """

    def __init__(self, model, tokenizer, device: str = "cpu", max_batch: int = 0, method: str = "tree"):
        """Wrap a loaded model and tokenizer (right padding; a BOS is prepended where the tokenizer adds none).

        Args:
            model: a Hugging Face causal LM (put in eval mode).
            tokenizer: its tokenizer.
            device: where ``model`` lives (``cpu`` or ``cuda:N``).
            max_batch: sentences per forward pass (0: all at once).
            method: ``tree`` (shared prefixes computed once) or ``batch`` (the original's padded batch).
        """
        if method not in SCORING_METHODS:
            raise ValueError(f"causal-LM scoring method {method!r}: use one of {', '.join(SCORING_METHODS)}")
        self.model = model.eval()
        self.method = method
        self.tok = tokenizer
        self.device = device
        self.max_batch = max_batch
        self.tok.padding_side = "right"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        probe = self.tok("a").input_ids
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        # OPT's tokenizer prepends its BOS itself; for one that does not (SmolLM2, GPT-2) we add it, so the
        # first word is always conditioned on a sentence start as in the original.
        self.prepend_bos = None if (bos is None or (probe and probe[0] == bos)) else int(bos)
        self.last_stats: dict[str, int] = {}
        self.last_exact = np.zeros(0, dtype=bool)

    @classmethod
    def load(
        cls, name: str, device: str = "cpu", cache_dir: str | None = None, max_batch: int = 0,
        method: str = "tree", dtype: str = "auto",
    ) -> CausalLMScorer:
        """Load ``--opt_model`` offline in ``dtype`` (:func:`resolve_dtype`).

        Args:
            name: as :func:`resolve_model_path`.
            device: ``cpu`` or ``cuda:N`` (``str(select_device(...))``).
            cache_dir: the Hugging Face cache.
            max_batch: sentences per forward pass (0: all at once).
            method: ``tree`` (shared prefixes computed once) or ``batch`` (the original's padded batch).
            dtype: one of :data:`LLM_DTYPES`.

        Returns:
            The scorer.

        Raises:
            LLMUnavailableError: the model is not available offline.
            ValueError: an unknown ``dtype``.
        """
        torch_dtype = resolve_dtype(dtype, device)
        path = resolve_model_path(name, cache_dir)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir)
        model = AutoModelForCausalLM.from_pretrained(path, cache_dir=cache_dir, dtype=torch_dtype)
        log.info("causal LM %s on %s in %s (--llm_dtype %s), %s scoring", name, device,
                 str(torch_dtype).removeprefix("torch."), dtype, method)
        return cls(model.to(device), tok, device, max_batch, method)

    def _rows(self, texts: list[str]) -> list[list[int]]:
        enc = self.tok(texts, add_special_tokens=True)
        return [
            ([self.prepend_bos] if self.prepend_bos is not None else []) + list(ids)
            for ids in enc["input_ids"]
        ]

    def _encode(self, texts: list[str]):
        import torch

        rows = self._rows(texts)
        width = max(len(r) for r in rows)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return ids, mask

    def _score_batch(self, texts: list[str], length_penalty: float) -> list[float]:
        if self.method == "tree":
            rows = self._rows(texts)
            tree = build_prefix_tree(rows)
            sums = tree_token_logprobs(self.model, tree, self.device)
            self._add_stats(len(rows), len(tree.tokens), len(tree.tokens), len(rows), 1)
            return [s - len(r) * length_penalty for s, r in zip(sums, rows)]
        import torch

        ids, mask = self._encode(texts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            logp = logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] - torch.logsumexp(
                logits[:, :-1], dim=-1
            )
            token_lp = (logp * mask[:, 1:]).sum(dim=1)
        n_tokens = mask.sum(dim=1)
        self._add_stats(len(texts), ids.numel(), ids.numel(), len(texts), 1)  # padded positions fed
        return (token_lp - n_tokens * length_penalty).cpu().double().tolist()

    def _add_stats(self, candidates: int, nodes: int, evaluated: int, scored: int, forwards: int) -> None:
        for key, value in zip(("candidates", "nodes", "nodes_evaluated", "scored", "forwards"),
                              (candidates, nodes, evaluated, scored, forwards)):
            self.last_stats[key] = self.last_stats.get(key, 0) + value

    def _score_chunked(self, texts: list[str], length_penalty: float, size: int) -> list[float]:
        self.last_stats = {}
        out: list[float] = []
        for i in range(0, len(texts), size):
            out.extend(self._score_batch(texts[i : i + size], length_penalty))
        return out

    def score(self, texts: list[str], length_penalty: float = 0.0) -> np.ndarray:
        """Log-probability of each text after BOS, minus ``n_tokens * length_penalty``.

        Args:
            texts: ``N`` sentences.
            length_penalty: nats per token (BOS included, as the original's attention-mask sum).

        Returns:
            ``[N]`` float64 scores (nats); zeros if scoring fails twice (logged).
        """
        self.last_exact = np.ones(len(texts), dtype=bool)
        if not texts:
            return np.zeros(0)
        size = self.max_batch if self.max_batch > 0 else len(texts)
        try:
            return np.asarray(self._score_chunked(texts, length_penalty, size))
        except Exception as exc:  # the original's fallback: 5 sub-batches, then zeros
            log.error("causal-LM scoring of %d texts failed (%s); retrying in 5 sub-batches", len(texts), exc)
        try:
            return np.asarray(self._score_chunked(texts, length_penalty, max(1, math.ceil(len(texts) / 5))))
        except Exception as exc:
            log.error("causal-LM scoring failed again (%s); using zero LLM scores", exc)
            return np.zeros(len(texts))

    def score_pruned(self, texts: list[str], base: np.ndarray, alpha: float,
                     length_penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` of only the candidates that can still have the best ``base + alpha * score``.

        Args:
            texts: ``N`` sentences (the whole n-best: ``llm_batch_size`` does not split it).
            base: ``[N]`` the rest of each total (``acoustic_scale*ac + (1-alpha)*lm``).
            alpha: the causal LM's weight, >= 0.
            length_penalty: as :meth:`score`.

        Returns:
            ``(scores [N] float64, exact [N] bool)``: :meth:`score`'s numbers where ``exact``; elsewhere the
            upper bound that dropped the candidate (``base + alpha*bound`` is below the best total). If
            the pruned pass fails (e.g. out of memory): :meth:`score` of all, all exact.
        """
        if not texts:
            return np.zeros(0), np.zeros(0, dtype=bool)
        try:
            rows = self._rows(texts)
            tree = build_prefix_tree(rows)
            offset = -length_penalty * np.array([len(r) for r in rows], dtype=np.float64)
            scores, exact, fwd = pruned_tree_scores(self.model, tree, base, alpha, offset, PRUNE_FIRST_ROUND,
                                                    self.device)
        except Exception as exc:
            log.error("pruned causal-LM scoring of %d texts failed (%s); scoring all of them", len(texts), exc)
            return self.score(texts, length_penalty), np.ones(len(texts), dtype=bool)
        self.last_stats = {}
        self._add_stats(len(rows), len(tree.tokens), int(fwd.evaluated.sum()), int(exact.sum()), fwd.n_forwards)
        self.last_exact = exact
        return scores, exact


def clean_hypothesis(text: str) -> str:
    """The original's clean-up before LLM scoring (handwriting leftovers; harmless for words).

    Args:
        text: a sentence.

    Returns:
        The sentence without ``>``, double spaces and spaces before ``, . ?``.
    """
    text = text.replace(">", "").replace("  ", " ")
    return text.replace(" ,", ",").replace(" .", ".").replace(" ?", "?")


def top_k_candidates(nbest: list[Hypothesis], acoustic_scale: float, k: int) -> list[Hypothesis]:
    """The ``k`` candidates the causal LM rescores: the first pass's best, by ``acoustic_scale*ac + lm``.

    Rescoring the k best of the first pass is the usual two-pass set-up; the original scored the whole
    augmented n-best (``k = 0`` here). The first pass's own best is always kept, so the n-gram-only answer
    can still be read off the rescored list. On the 1-gram's augmented 100-best (~137 candidates, ~380
    prefix-tree nodes) ``k = 50`` feeds ~150 nodes (``benchmarks/lm_decode_latency.py --llm_only``); on the
    demo's 140 val trials (``./run_demo.sh``) the n-gram + LLM WER is 6.2 % (documented weights) and 2.8 %
    (tuned) with k = 50, against 6.3 % and 2.8 % with every candidate scored.

    Args:
        nbest: distinct hypotheses (the decoder's n-best and the augmentation list each sentence once; a
            repeated sentence would take two of the k places).
        acoustic_scale: the weight of ``ac`` in the first pass's total.
        k: how many to keep (0 or ``>= len(nbest)``: all).

    Returns:
        The kept hypotheses in their input order (ties in the score: the earlier one is kept; a NaN first-pass
        score ranks last).
    """
    if k <= 0 or len(nbest) <= k:
        return list(nbest)
    first_pass = np.array([h.ngram_total(acoustic_scale) for h in nbest])
    keep = np.sort(np.argsort(-first_pass, kind="stable")[:k])
    return [nbest[i] for i in keep]


def rescore_nbest(
    scorer: CausalLMScorer,
    nbest: list[Hypothesis],
    acoustic_scale: float,
    alpha: float,
    length_penalty: float = 0.0,
    context: str = "",
    prune: bool = False,
    top_k: int = 0,
) -> tuple[str, list[Hypothesis]]:
    """LLM-rescore an (augmented) n-best.

    Args:
        scorer: the loaded causal LM.
        nbest: hypotheses (empty sentences are left out).
        acoustic_scale: weight of ``ac``.
        alpha: causal-LM weight; the n-gram gets ``1 - alpha``.
        length_penalty: nats per token for the causal LM.
        context: text prefixed to every sentence for the causal LM only (not in the output).
        prune: with tree scoring, drop the candidates that cannot win (:meth:`CausalLMScorer.score_pruned`):
            same best sentence, same numbers for the candidates scored to the end; a dropped candidate's
            ``llm`` is the upper bound of its LLM score that dropped it (the log-probabilities of its tokens
            known when it was dropped, the rest taken as 0, minus its length penalty) and its ``total`` the
            same formula with that bound, so it stays below the best. ``alpha == 0``: the LLM cannot change
            the ranking, so only the first round's candidates are scored to the end.
        top_k: when > 0, only the ``top_k`` candidates with the best first-pass total ``acoustic_scale*ac +
            lm`` (ties: the earlier one) are scored and returned (:func:`top_k_candidates`); 0: all (the original).

    Returns:
        ``(best sentence after the clean-up, hypotheses)`` with ``llm`` set and
        ``total = acoustic_scale*ac + (1-alpha)*lm + alpha*llm``, in the input order; ``("", [])`` if none is
        non-empty.
    """
    kept = top_k_candidates([h for h in nbest if h.sentence.strip()], acoustic_scale, top_k)
    if not kept:
        log.error("causal-LM rescoring: no non-empty hypothesis")
        return "", []
    use_context = bool(context.split())
    texts = [
        clean_hypothesis(f"{context} {h.sentence.strip()}" if use_context else h.sentence.strip())
        for h in kept
    ]
    if prune and scorer.method == "tree":
        base = np.array([acoustic_scale * h.ac + (1 - alpha) * h.lm for h in kept])
        llm, _ = scorer.score_pruned(texts, base, alpha, length_penalty)
    else:
        llm = scorer.score(texts, length_penalty)
    rows = []
    for h, s in zip(kept, llm):
        total = acoustic_scale * h.ac + (1 - alpha) * h.lm + alpha * float(s)
        rows.append(Hypothesis(h.sentence.strip(), h.ac, h.lm, float(s), total, h.words))
    best = max(range(len(rows)), key=lambda i: rows[i].total)
    return clean_hypothesis(kept[best].sentence.strip()), rows
