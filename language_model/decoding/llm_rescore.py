"""Causal-LM rescoring of the n-best (the original's OPT step, ``--do_opt``; spec §4.9).

``load_causal_lm(name)`` resolves ``--opt_model``: the keyword ``smollm2`` (the embedded SmolLM2-135M,
converted once by :mod:`language_model.decoding.smollm2`), a local Hugging Face folder, or a hub id that is
already in the local Hugging Face cache. Nothing is downloaded (``HF_HUB_OFFLINE=1``); a hub id that
is not cached fails at once with a one-line :class:`LLMUnavailableError`.

``CausalLMScorer.score(texts)`` is the original's ``rescore_with_gpt2``: natural-log sum of the token
log-probabilities after a BOS token (no EOS term) minus ``n_tokens * length_penalty``, where
``n_tokens`` counts the BOS as the original's attention-mask sum does. By default the sentences go through
the model as one prefix tree (:mod:`language_model.decoding.prefix_tree`: shared prefixes computed once,
leaves not fed); ``method="batch"`` keeps the original's right-padded batch (same scores). On failure (e.g. out of memory) it retries in 5 sub-batches, then gives zeros, as the original.

``rescore_nbest`` is ``gpt2_lm_decode``: context prefix and the handwriting-era punctuation clean-up,
then ``total = acoustic_scale*ac + (1-alpha)*ngram + alpha*llm``. Fixed: the original dropped empty
hypotheses from the score arrays but not from the rows, so one empty candidate shifted every later
LLM/total score onto the wrong sentence; here empty hypotheses are left out of the rows too.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from language_model.decoding.prefix_tree import build_prefix_tree, tree_token_logprobs
from nejm_b2txt_utils.hypothesis import Hypothesis

log = logging.getLogger(__name__)

#: ``--opt_model`` default: the original's model (needs a local copy or a populated HF cache).
DEFAULT_OPT_MODEL = "facebook/opt-6.7b"
#: How sentences are scored: one pass over their prefix tree, or the original's padded batch (same numbers).
SCORING_METHODS = ("tree", "batch")
#: ``--opt_model`` keyword for the embedded SmolLM2-135M.
EMBEDDED_MODEL = "smollm2"


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
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir)
    if isinstance(cached, str):
        return name
    raise LLMUnavailableError(
        f"causal LM {name!r} is neither a local folder nor in the Hugging Face cache"
        f"{f' ({cache_dir})' if cache_dir else ''} and this setup never downloads: use --opt_model "
        f"{EMBEDDED_MODEL} (embedded SmolLM2-135M) or --opt_model /path/to/a/local/model"
    )


class CausalLMScorer:
    """Sentence log-probabilities from a Hugging Face causal LM (fp16 on CUDA, fp32 on CPU)."""

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

    @classmethod
    def load(
        cls, name: str, device: str = "cpu", cache_dir: str | None = None, max_batch: int = 0,
        method: str = "tree",
    ) -> CausalLMScorer:
        """Load ``--opt_model`` offline (fp16 on CUDA, fp32 on CPU).

        Args:
            name: as :func:`resolve_model_path`.
            device: ``cpu`` or ``cuda:N`` (``str(select_device(...))``).
            cache_dir: the Hugging Face cache.
            max_batch: sentences per forward pass (0: all at once).
            method: ``tree`` (shared prefixes computed once) or ``batch`` (the original's padded batch).

        Returns:
            The scorer.

        Raises:
            LLMUnavailableError: the model is not available offline.
        """
        path = resolve_model_path(name, cache_dir)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        tok = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir)
        model = AutoModelForCausalLM.from_pretrained(path, cache_dir=cache_dir, dtype=dtype)
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
            sums = tree_token_logprobs(self.model, build_prefix_tree(rows), self.device)
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
        return (token_lp - n_tokens * length_penalty).cpu().double().tolist()

    def _score_chunked(self, texts: list[str], length_penalty: float, size: int) -> list[float]:
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


def clean_hypothesis(text: str) -> str:
    """The original's clean-up before LLM scoring (handwriting leftovers; harmless for words).

    Args:
        text: a sentence.

    Returns:
        The sentence without ``>``, double spaces and spaces before ``, . ?``.
    """
    text = text.replace(">", "").replace("  ", " ")
    return text.replace(" ,", ",").replace(" .", ".").replace(" ?", "?")


def rescore_nbest(
    scorer: CausalLMScorer,
    nbest: list[Hypothesis],
    acoustic_scale: float,
    alpha: float,
    length_penalty: float = 0.0,
    context: str = "",
) -> tuple[str, list[Hypothesis]]:
    """LLM-rescore an (augmented) n-best.

    Args:
        scorer: the loaded causal LM.
        nbest: hypotheses (empty sentences are left out).
        acoustic_scale: weight of ``ac``.
        alpha: causal-LM weight; the n-gram gets ``1 - alpha``.
        length_penalty: nats per token for the causal LM.
        context: text prefixed to every sentence for the causal LM only (not in the output).

    Returns:
        ``(best sentence after the clean-up, hypotheses)`` with ``llm`` set and
        ``total = acoustic_scale*ac + (1-alpha)*lm + alpha*llm``, in the input order; ``("", [])`` if none is
        non-empty.
    """
    kept = [h for h in nbest if h.sentence.strip()]
    if not kept:
        log.error("causal-LM rescoring: no non-empty hypothesis")
        return "", []
    use_context = bool(context.split())
    texts = [
        clean_hypothesis(f"{context} {h.sentence.strip()}" if use_context else h.sentence.strip())
        for h in kept
    ]
    llm = scorer.score(texts, length_penalty)
    rows = []
    for h, s in zip(kept, llm):
        total = acoustic_scale * h.ac + (1 - alpha) * h.lm + alpha * float(s)
        rows.append(Hypothesis(h.sentence.strip(), h.ac, h.lm, float(s), total, h.words))
    best = max(range(len(rows)), key=lambda i: rows[i].total)
    return clean_hypothesis(kept[best].sentence.strip()), rows
