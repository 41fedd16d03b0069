"""A lean forward pass of Llama-family causal LMs (SmolLM2) for the prefix-tree scoring.

The Hugging Face forward of a 30-layer model is ~20 small tensor operations per layer; on a 2-core CPU each
one costs tens of microseconds whatever its size, and the projections run as 7 matrix products per layer.
:class:`LlamaTreeForward` computes the same function with the query/key/value projections as one product
and the gate/up projections as one product (their weights concatenated once; the model's own modules are
re-pointed at row slices of the concatenation, so the weights are not held twice), RoPE tables computed once
per call for all layers, and grouped-query attention without repeating keys and values.

Same mathematics as ``LlamaModel.forward`` (RMSNorm in float32, RoPE tables in float32 cast to the weights'
dtype, scaled dot-product attention with the caller's additive mask); the fused products round differently,
so in bfloat16 scores move by a fraction of a nat per sentence (the same order as bfloat16 itself); in
float32 the tests find them equal to 1e-4.

Only plain Llama configurations take this path (:meth:`LlamaTreeForward.supports`: SiLU MLP, no biases, the
default RoPE); anything else (OPT, GPT-2, scaled RoPE) keeps the Hugging Face forward.
"""

from __future__ import annotations

#: attribute under which a model keeps its :class:`LlamaTreeForward` (built once per model).
_ATTR = "_b2txt_lean_forward"


class LlamaTreeForward:
    """Hidden states of a Llama-family model for positions with explicit positions and an additive mask.

    Attributes:
        n_heads, n_kv, head_dim: the attention shape.
    """

    def __init__(self, model):
        """Fuse the projections of ``model`` (a ``LlamaForCausalLM``) in place.

        Args:
            model: the causal LM; its ``q/k/v_proj`` and ``gate/up_proj`` weights become slices of the fused ones.
        """
        cfg = model.config
        self.model = model
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self._fuse()

    @staticmethod
    def supports(model) -> bool:
        """Whether ``model`` is a plain Llama (SiLU MLP, no projection biases, default RoPE, no tensor parallel).

        Args:
            model: a Hugging Face causal LM.

        Returns:
            True when :class:`LlamaTreeForward` computes its forward.
        """
        cfg = getattr(model, "config", None)
        if cfg is None or getattr(cfg, "model_type", "") != "llama":
            return False
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        return (getattr(cfg, "hidden_act", "") == "silu" and not getattr(cfg, "attention_bias", False)
                and not getattr(cfg, "mlp_bias", False) and getattr(cfg, "pretraining_tp", 1) == 1
                and rope.get("rope_type", rope.get("type", "default")) == "default"
                and float(getattr(model.model.rotary_emb, "attention_scaling", 1.0)) == 1.0)

    @classmethod
    def for_model(cls, model) -> LlamaTreeForward | None:
        """The model's lean forward (built on first use), or None when :meth:`supports` says no.

        Args:
            model: a Hugging Face causal LM.

        Returns:
            The :class:`LlamaTreeForward` kept on the model, or None.
        """
        if not cls.supports(model):
            return None
        lean = getattr(model, _ATTR, None)
        if lean is None:
            lean = cls(model)
            setattr(model, _ATTR, lean)
        return lean

    def _fuse(self) -> None:
        import torch

        self.layers = []
        for layer in self.model.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv = torch.cat([att.q_proj.weight.data, att.k_proj.weight.data, att.v_proj.weight.data])  # [nq+2nk, H]
            gate_up = torch.cat([mlp.gate_proj.weight.data, mlp.up_proj.weight.data])  # [2I, H]
            nq, nk, ni = att.q_proj.weight.shape[0], att.k_proj.weight.shape[0], mlp.gate_proj.weight.shape[0]
            att.q_proj.weight.data, att.k_proj.weight.data = qkv[:nq], qkv[nq : nq + nk]
            att.v_proj.weight.data = qkv[nq + nk :]
            mlp.gate_proj.weight.data, mlp.up_proj.weight.data = gate_up[:ni], gate_up[ni:]
            self.layers.append((layer, qkv, gate_up))

    def _stale(self) -> bool:
        """Whether the model's weights were replaced since the fusion (``model.to(dtype)`` makes new tensors)."""
        layer, qkv, _ = self.layers[0]
        return layer.self_attn.q_proj.weight.data_ptr() != qkv.data_ptr()

    def _rms(self, x, weight):
        import torch

        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x32.to(x.dtype)

    def hidden(self, ids, positions, mask, cache: list | None = None):
        """Final-norm hidden states of ``M`` new positions.

        Args:
            ids: ``[M]`` int64 token ids.
            positions: ``[M]`` int64 position of each token (its depth in the prefix tree).
            mask: ``[M, P + M]`` additive attention mask in the weights' dtype (0: attend, dtype min: not)
                over the ``P`` cached positions, then the new ones.
            cache: per layer ``(k [n_kv, P, head_dim], v [n_kv, P, head_dim])`` of earlier calls (RoPE applied);
                extended in place with the new positions. None: no cache (``P = 0``), nothing kept.

        Returns:
            ``[M, hidden]`` in the weights' dtype.
        """
        import torch
        import torch.nn.functional as F

        if self._stale():
            self._fuse()
        base = self.model.model
        m, hd, nq, nk = ids.shape[0], self.head_dim, self.n_heads * self.head_dim, self.n_kv * self.head_dim
        x = base.embed_tokens(ids)  # [M, H]
        freqs = positions[:, None].float() * base.rotary_emb.inv_freq.float()[None]  # [M, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [M, hd]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        half = hd // 2
        attn_mask = mask[None, None]  # [1, 1, M, P + M]
        for i, (layer, qkv_w, gate_up_w) in enumerate(self.layers):
            h = self._rms(x, layer.input_layernorm.weight)
            q, k, v = (h @ qkv_w.t()).split([nq, nk, nk], dim=-1)
            q = q.view(m, self.n_heads, hd).transpose(0, 1)  # [nh, M, hd]
            k = k.view(m, self.n_kv, hd).transpose(0, 1)  # [nkv, M, hd]
            v = v.view(m, self.n_kv, hd).transpose(0, 1)
            q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
            k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
            if cache is not None:
                if i < len(cache):
                    k, v = torch.cat([cache[i][0], k], dim=1), torch.cat([cache[i][1], v], dim=1)  # [nkv, P+M, hd]
                    cache[i] = (k, v)
                else:
                    cache.append((k, v))
            att = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=attn_mask,
                                                 scale=hd**-0.5, enable_gqa=True)  # [1, nh, M, hd]
            x = x + layer.self_attn.o_proj(att[0].transpose(0, 1).reshape(m, nq))  # [M, H]
            h = self._rms(x, layer.post_attention_layernorm.weight)
            gate, up = (h @ gate_up_w.t()).chunk(2, dim=-1)  # [M, I] each
            x = x + layer.mlp.down_proj(F.silu(gate) * up)
        return self._rms(x, base.norm.weight)
