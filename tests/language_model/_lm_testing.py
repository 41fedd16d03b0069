"""Helpers shared by the LM server tests: a tiny random causal LM, a server subprocess, the original's client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from language_model.graph.toy_lm import TOY_LEXICON
from nejm_b2txt_utils import redis_protocol as rp

REPO = Path(__file__).resolve().parents[2]
STANDALONE = REPO / "language_model" / "language-model-standalone.py"


def _word_tokenizer(add_bos: bool):
    """A word-level fast tokenizer over the toy words (``</s>`` prepended when ``add_bos``) and its vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in sorted(TOY_LEXICON) + ["hello", ",", "."]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    return fast, vocab


def make_tiny_causal_lm(out_dir: Path, add_bos: bool = True) -> Path:
    """A random 1-layer OPT over the toy words, with a word-level tokenizer; OPT-like (prepends ``</s>``)
    when ``add_bos``, GPT-2-like (adds nothing) otherwise."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    fast, vocab = _word_tokenizer(add_bos)
    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                    max_position_embeddings=64, word_embed_proj_dim=16, pad_token_id=0, bos_token_id=1,
                    eos_token_id=1)
    model = OPTForCausalLM(cfg).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    fast.save_pretrained(str(out_dir))
    return out_dir


def make_tiny_llama(out_dir: Path, **config) -> Path:
    """A random 2-layer Llama (grouped-query attention: 4 query heads, 2 key/value heads) over the toy words,
    with the word-level tokenizer that prepends ``</s>``; ``config`` overrides ``LlamaConfig`` fields."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    fast, vocab = _word_tokenizer(True)
    torch.manual_seed(0)
    cfg = LlamaConfig(**{"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
                         "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1, "tie_word_embeddings": True,
                         **config})
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the initialiser's: sentence scores that differ by nats
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    fast.save_pretrained(str(out_dir))
    return out_dir


class ServerProcess:
    """``language-model-standalone.py`` as a child process (the way users start it)."""

    def __init__(self, lm_dir: Path, port: int, *extra: str, env: dict | None = None, log_path: Path | None = None):
        self.cmd = [sys.executable, str(STANDALONE), "--lm_path", str(lm_dir), "--redis_ip", "127.0.0.1",
                    "--redis_port", str(port), "--acoustic_scale", "0.325", "--blank_penalty", "90", *extra]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.cmd, cwd=str(REPO), env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: str = "term", timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            (self.proc.terminate if sig == "term" else self.proc.kill)()
        rc = self.proc.wait(timeout=timeout)
        self.proc = None
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def wait_until(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class OriginalClient:
    """The original evaluator's client, written from spec §2.5 with raw redis-py calls: FLUSHALL, last-seen
    ids from Redis TIME in ms, XADD then XREAD(block 10 s, count 1) for each answer. ``timeout_s`` only
    bounds the test (the original waited forever)."""

    def __init__(self, r, timeout_s: float = 30.0):
        # redis-py 8 defaults to a 5 s socket timeout, below the original's 10 s XREAD block (redis-py 5 had none)
        r = r.__class__(connection_pool=r.connection_pool.__class__(
            **{**r.connection_pool.connection_kwargs, "socket_timeout": None}))
        self.r = r
        self.timeout_s = timeout_s
        r.flushall()
        now = rp.redis_time_ms(r)
        self.seen = {s: now for s in ("remote_lm_done_resetting", "remote_lm_done_updating_params",
                                      "remote_lm_output_partial", "remote_lm_output_final",
                                      "remote_lm_done_finalizing")}

    def _wait(self, stream: str) -> dict[bytes, bytes]:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            resp = self.r.xread({stream: self.seen[stream]}, count=1, block=10000)
            if resp:
                entry_id, fields = resp[0][1][0]
                self.seen[stream] = entry_id
                return fields
        raise TimeoutError(f"no answer on {stream}")

    def reset(self) -> dict:
        self.r.xadd("remote_lm_reset", {"done": 0})
        time.sleep(0.001)
        return self._wait("remote_lm_done_resetting")

    def update_params(self, **params) -> dict:
        self.r.xadd("remote_lm_update_params", params)
        time.sleep(0.001)
        return self._wait("remote_lm_done_updating_params")

    def send_logits(self, logits: np.ndarray) -> dict:
        self.r.xadd("remote_lm_input", {"logits": np.float32(logits).tobytes()})
        return self._wait("remote_lm_output_partial")

    def send_raw(self, fields: dict) -> dict:
        self.r.xadd("remote_lm_input", fields)
        return self._wait("remote_lm_output_partial")

    def finalize(self) -> dict:
        self.r.xadd("remote_lm_finalize", {"done": 0})
        time.sleep(0.005)
        return self._wait("remote_lm_output_final")

    @staticmethod
    def parse(final: dict[bytes, bytes]) -> list[tuple[str, float, float, float, float]]:
        """The original's parsing of ``scoring``: slices [k::5], sorted by total descending."""
        parts = final[b"scoring"].decode().split(";")
        sents, ac, ng, llm, tot = parts[0::5], parts[1::5], parts[2::5], parts[3::5], parts[4::5]
        rows = [(s, float(a), float(n), float(m), float(t)) for s, a, n, m, t in zip(sents, ac, ng, llm, tot)]
        return sorted(rows, key=lambda x: -x[4])

    def decode_trial(self, logits: np.ndarray) -> tuple[dict, dict]:
        self.reset()
        partial = self.send_logits(logits)
        return partial, self.finalize()
