"""A causal Transformer phoneme decoder that streams: day layer -> patches -> Transformer -> 41 logits.

Same input, patching and output as ``rnn_model.GRUDecoder`` (80 ms frames, model class order), so the trainer,
``evaluate_model.py`` and the LM path use it unchanged (``model.architecture: transformer``)::

    x [B, T, 512] -> day layer (DayLayerMixin) -> patches [B, P, 14*512] -> Linear -> [B, P, E]
      -> n_layers x (LayerNorm -> windowed causal self-attention -> LayerNorm -> MLP, both residual)
      -> LayerNorm -> out: Linear(E, 41) -> logits [B, P, 41]

Frame i attends to frames i - left_context .. i only, so the model streams with a bounded cache. Positions are
learned, as one bias per head and distance 0..left_context added to the attention scores: a trial of any length
is valid, and a chunk sees exactly what the whole trial would (absolute positions would cap the trial length
and make a frame's output depend on where the stream started).

Streaming: ``forward(x_chunk, day_idx, states=state, return_state=True)`` with ``states=None`` for the first
chunk, exactly the GRU's call. The state (:class:`StreamState`) carries the bins not yet in a full patch and
each layer's last ``left_context`` keys/values, so the concatenated chunk outputs equal the whole-trial output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model_training.architectures import register
from model_training.rnn_model import DayLayerMixin, patchify


@dataclass
class StreamState:
    """What a chunk leaves for the next: ``pending`` ``[B, r, D]`` day-layer outputs not yet in a patch, and per
    layer the cached ``(keys, values)`` ``[B, H, <= left_context, E / H]`` of the latest frames."""

    pending: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor] | None]


class WindowedCausalAttention(nn.Module):
    """Multi-head self-attention where frame i sees frames i - left_context .. i, plus a learned bias per head and
    distance (the positions)."""

    def __init__(self, n_embd: int, n_heads: int, left_context: int, dropout: float):
        super().__init__()
        if n_embd % n_heads:
            raise ValueError(f"model.n_units ({n_embd}) must be divisible by model.n_heads ({n_heads})")
        self.n_heads, self.left_context, self.dropout = n_heads, left_context, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.rel_pos = nn.Parameter(torch.zeros(n_heads, left_context + 1))  # (H, distance 0..W)

    def score_bias(self, n_query: int, n_key: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[H, n_query, n_key]``: the learned bias by distance, -inf outside the window (the queries are the
        last ``n_query`` of the ``n_key`` frames)."""
        q_pos = torch.arange(n_key - n_query, n_key, device=device).unsqueeze(1)  # (Nq, 1)
        dist = q_pos - torch.arange(n_key, device=device).unsqueeze(0)  # (Nq, Nk)
        allowed = (dist >= 0) & (dist <= self.left_context)
        bias = self.rel_pos[:, dist.clamp(0, self.left_context)]  # (H, Nq, Nk)
        return bias.masked_fill(~allowed, -math.inf).to(dtype)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x [B, N, E]`` new frames, ``past`` cached keys/values -> ``([B, N, E], last left_context keys/values)``."""
        b, n, e = x.shape
        q, k, v = self.c_attn(x).split(e, dim=2)  # 3 x (B, N, E)
        q, k, v = (t.view(b, n, self.n_heads, e // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, N, hd)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, H, M + N, hd)
        bias = self.score_bias(n, k.shape[2], x.device, q.dtype)  # (H, N, M + N)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0),
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, N, hd)
        y = y.transpose(1, 2).reshape(b, n, e)  # (B, N, E)
        start = k.shape[2] - self.left_context if self.left_context > 0 else k.shape[2]
        cache = (k[:, :, max(start, 0):], v[:, :, max(start, 0):])  # (B, H, <= left_context, hd) each
        return self.c_proj(y), cache


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, n_embd: int, n_heads: int, left_context: int, dropout: float, ffn_mult: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = WindowedCausalAttention(n_embd, n_heads, left_context, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, ffn_mult * n_embd), nn.GELU(),
                                 nn.Linear(ffn_mult * n_embd, n_embd), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None):
        """``x [B, N, E]`` -> ``([B, N, E], this layer's new cache)``."""
        a, cache = self.attn(self.ln_1(x), past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), cache


class CausalTransformerDecoder(DayLayerMixin, nn.Module):
    """Per-session input layer, patch embedding, windowed causal Transformer and a linear read-out to logits."""

    def __init__(self, neural_dim: int, n_units: int, n_days: int, n_classes: int, rnn_dropout: float = 0.0,
                 input_dropout: float = 0.0, n_layers: int = 6, n_heads: int = 6, left_context: int = 32,
                 ffn_mult: int = 4, patch_size: int = 14, patch_stride: int = 4):
        super().__init__()
        if left_context < 0:
            raise ValueError(f"model.left_context: expected frames >= 0, got {left_context}")
        self.neural_dim, self.n_units, self.n_days, self.n_classes = neural_dim, n_units, n_days, n_classes
        self.n_layers, self.n_heads, self.left_context = n_layers, n_heads, left_context
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self._init_day_layers(neural_dim, n_days, input_dropout)
        self.patch_embed = nn.Linear(neural_dim * max(patch_size, 1), n_units)
        self.embed_dropout = nn.Dropout(rnn_dropout)
        self.blocks = nn.ModuleList([Block(n_units, n_heads, left_context, rnn_dropout, ffn_mult)
                                     for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(n_units)
        self.out = nn.Linear(n_units, n_classes)
        for name, p in self.named_parameters():  # nanoGPT's init; day layers stay identity / zero
            if name.endswith("weight") and p.dim() == 2 and not name.startswith("day_"):
                nn.init.normal_(p, mean=0.0, std=0.02)
            elif name.endswith("bias") and not name.startswith("day_"):
                nn.init.zeros_(p)

    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T, D]`` -> ``(patches [B, P, k*D], leftover bins [B, T - P*stride, D])``."""
        size, stride = (self.patch_size, self.patch_stride) if self.patch_size > 0 else (1, 1)
        n = (x.shape[1] - size) // stride + 1 if x.shape[1] >= size else 0
        if n == 0:
            return x.new_zeros(x.shape[0], 0, size * x.shape[2]), x
        frames = patchify(x, size, stride) if self.patch_size > 0 else x  # (B, P, k*D)
        return frames, x[:, n * stride:]

    def forward(self, x: torch.Tensor, day_idx: torch.Tensor, states: StreamState | None = None,
                return_state: bool = False):
        """``x [B, T, neural_dim]`` (a whole trial, or the next chunk of one when ``states`` is given), ``day_idx
        [B]`` -> logits ``[B, P, n_classes]`` of the frames completed by this chunk (and the :class:`StreamState`
        when ``return_state``)."""
        dtype = x.dtype
        x = self.day_layer(x, day_idx).to(dtype)  # (B, T, D)
        if states is not None:
            x = torch.cat([states.pending.to(dtype), x], dim=1)  # (B, r + T, D)
        frames, pending = self._frames(x)  # (B, P, k*D), (B, r', D)
        kv = list(states.kv) if states is not None else [None] * self.n_layers
        h = self.embed_dropout(self.patch_embed(frames))  # (B, P, E)
        if h.shape[1] > 0:
            for i, block in enumerate(self.blocks):
                h, kv[i] = block(h, kv[i])
        logits = self.out(self.ln_f(h))  # (B, P, n_classes)
        if return_state:
            return logits, StreamState(pending, kv)
        return logits


@register("transformer", "torch")
def build_transformer_decoder(args, **shared) -> CausalTransformerDecoder:
    """From a config: the shared arguments plus ``model.n_layers``, ``n_heads`` (6), ``left_context`` (32
    frames, 2.56 s) and ``ffn_mult`` (4). ``model.rnn_dropout`` is the Transformer's dropout."""
    m = args["model"]
    return CausalTransformerDecoder(n_layers=int(m["n_layers"]), n_heads=int(m.get("n_heads", 6)),
                                    left_context=int(m.get("left_context", 32)),
                                    ffn_mult=int(m.get("ffn_mult", 4)), **shared)
