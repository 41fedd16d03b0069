"""The baseline phoneme decoder (spec §5): day layers -> 14-bin patches -> 5-layer GRU -> 41 logits.

Constructor arguments and parameter names are the original's (``day_weights.N``, ``day_biases.N``,
``gru.*``, ``out.*``, ``h0``), so the released ``best_checkpoint`` loads unchanged. Modules are
built in the original's order, which fixes how the torch RNG is consumed at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from model_training.architectures import register


def patchify(x: torch.Tensor, patch_size: int, patch_stride: int) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, P, patch_size * D]``, P = (T - patch_size) // patch_stride + 1.

    Each window is flattened time-major (index k * D + f for bin k of the window and channel f),
    i.e. ``patch_size`` consecutive frames concatenated. Tail bins that fill no window are dropped.
    The result has ``x``'s dtype. On an XLA device the windows are ``patch_size`` strided slices stacked
    (same values): torch_xla has no lowering of ``unfold``, which would run on the host mid-graph.
    """
    b, t, d = x.shape
    if x.device.type == "xla":
        n_frames = (t - patch_size) // patch_stride + 1
        span = patch_stride * (n_frames - 1) + 1
        windows = torch.stack([x[:, k:k + span:patch_stride] for k in range(patch_size)], dim=2)  # (B, P, k, D)
        return windows.reshape(b, n_frames, patch_size * d).to(x.dtype)  # (B, P, k*D)
    windows = x.unfold(1, patch_size, patch_stride)  # (B, P, D, patch_size)
    return windows.transpose(2, 3).reshape(b, windows.shape[1], patch_size * d).to(x.dtype)  # (B, P, k*D)


def output_frames(n_time_steps: torch.Tensor, patch_size: int, patch_stride: int) -> torch.Tensor:
    """``[B]`` output frames of ``[B]`` input bins: the tensor twin of ``nejm_b2txt_utils.t15_hdf5.n_output_frames``
    (the one rule: ``max(0, (n - patch_size) // patch_stride + 1)``; ``n`` when ``patch_size <= 0``), int32."""
    n = n_time_steps.to(torch.int64)
    return (n if patch_size <= 0 else ((n - patch_size) // patch_stride + 1).clamp_min(0)).to(torch.int32)


class DayLayerMixin:
    """The per-session input layer (x @ W_day + b_day, softsign, dropout) and the patching, shared by
    ``GRUDecoder`` and the ``model_training_nnn`` sub-models. Parameters are the original's
    ``day_weights.N`` [D, D] (identity) and ``day_biases.N`` [1, D] (zeros) on the module itself.

    Two gathers of the same maths (spec nnn §2.6): ``"list"`` picks the batch's days in Python (days
    absent from the batch get no gradient, so AdamW leaves them untouched, as in the original);
    ``"index_select"`` stacks all days and gathers on the device (static shapes, no host read: XLA).
    ``day_gather="auto"`` uses index_select on an XLA device and the list elsewhere. The affine is a
    ``bmm`` with both operands cast to ``x.dtype``. A model built with ONE day layer (``model.day_layers:
    false``) applies it to every session: every day index maps to layer 0.
    """

    day_gather: str = "auto"

    def _init_day_layers(self, neural_dim: int, n_days: int, input_dropout: float) -> None:
        self.day_layer_activation = nn.Softsign()
        self.day_weights = nn.ParameterList([nn.Parameter(torch.eye(neural_dim)) for _ in range(n_days)])
        self.day_biases = nn.ParameterList([nn.Parameter(torch.zeros(1, neural_dim)) for _ in range(n_days)])
        self.day_layer_dropout = nn.Dropout(input_dropout)

    def day_layer(self, x: torch.Tensor, day_idx: torch.Tensor) -> torch.Tensor:
        """``x [B, T, D]``, ``day_idx [B]`` -> softsign(x @ W[day] + b[day]) with dropout, ``[B, T, D]``."""
        gather = self.day_gather
        if len(self.day_weights) == 1:  # one shared input layer (model.day_layers: false)
            day_idx = torch.zeros_like(day_idx)
        if gather == "auto":
            gather = "index_select" if x.device.type == "xla" else "list"
        if gather == "index_select":
            weights = torch.stack(list(self.day_weights), dim=0).index_select(0, day_idx)  # (B, D, D)
            biases = torch.stack(list(self.day_biases), dim=0).squeeze(1)  # (n_days, D)
            biases = biases.index_select(0, day_idx).unsqueeze(1)  # (B, 1, D)
        elif gather == "list":
            weights = torch.stack([self.day_weights[int(i)] for i in day_idx], dim=0)  # (B, D, D)
            biases = torch.cat([self.day_biases[int(i)] for i in day_idx], dim=0).unsqueeze(1)  # (B, 1, D)
        else:
            raise ValueError(f"day_gather: expected 'auto', 'list' or 'index_select', got {gather!r}")
        x = torch.bmm(x, weights.to(x.dtype)) + biases.to(x.dtype)  # (B, T, D)
        x = self.day_layer_activation(x)
        if self.day_layer_dropout.p > 0:
            x = self.day_layer_dropout(x)
        return x

    def preprocess(self, x: torch.Tensor, day_idx: torch.Tensor, patch_size: int, patch_stride: int) -> torch.Tensor:
        """Day layer then patching: ``[B, T, D]`` -> ``[B, P, patch_size * D]`` (``[B, T, D]`` when
        ``patch_size`` is 0), cast back to ``x``'s dtype (under autocast the bmm runs in bf16)."""
        dtype = x.dtype
        x = self.day_layer(x, day_idx)
        if patch_size > 0:
            x = patchify(x, patch_size, patch_stride)  # (B, P, patch_size * D)
        return x.to(dtype)


def init_gru_weights(gru: nn.GRU) -> None:
    """The original's GRU init: hidden-to-hidden orthogonal, input-to-hidden xavier-uniform, biases default."""
    for name, param in gru.named_parameters():
        if "weight_hh" in name:
            nn.init.orthogonal_(param)
        if "weight_ih" in name:
            nn.init.xavier_uniform_(param)


def make_gru(input_size: int, hidden: int, n_layers: int, dropout: float) -> nn.GRU:
    """A batch-first unidirectional ``nn.GRU`` with the original's initialisation (:func:`init_gru_weights`).

    Args:
        input_size: features per time step.
        hidden: units per layer.
        n_layers: stacked layers.
        dropout: between layers; 0 with one layer (torch would warn: it applies only between layers).

    Returns:
        The GRU.
    """
    gru = nn.GRU(input_size=input_size, hidden_size=hidden, num_layers=n_layers,
                 dropout=dropout if n_layers > 1 else 0.0, batch_first=True, bidirectional=False)
    init_gru_weights(gru)
    return gru


class GRUDecoder(DayLayerMixin, nn.Module):
    """Per-session input layer, patching, stacked GRU and a linear read-out to phoneme logits."""

    def __init__(self, neural_dim: int, n_units: int, n_days: int, n_classes: int, rnn_dropout: float = 0.0,
                 input_dropout: float = 0.0, n_layers: int = 5, patch_size: int = 0, patch_stride: int = 0):
        super().__init__()
        self.neural_dim = neural_dim
        self.n_units = n_units
        self.n_classes = n_classes
        self.n_layers = n_layers
        self.n_days = n_days
        self.rnn_dropout = rnn_dropout
        self.input_dropout = input_dropout
        self.patch_size = patch_size
        self.patch_stride = patch_stride

        # Day-specific input layers: x @ W + b with W = identity and b = 0 at initialisation.
        self._init_day_layers(neural_dim, n_days, input_dropout)

        self.input_size = neural_dim * patch_size if patch_size > 0 else neural_dim
        self.gru = make_gru(self.input_size, n_units, n_layers, rnn_dropout)

        self.out = nn.Linear(n_units, n_classes)
        nn.init.xavier_uniform_(self.out.weight)

        # One learnable initial state, shared by every layer and every trial.
        self.h0 = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(1, 1, n_units)))

    def forward(self, x: torch.Tensor, day_idx: torch.Tensor, states: torch.Tensor | None = None,
                return_state: bool = False):
        """``x [B, T, neural_dim]``, ``day_idx [B]`` -> logits ``[B, P, n_classes]`` (and the GRU state
        ``[n_layers, B, n_units]`` when ``return_state``)."""
        batch = x.size(0)
        x = self.preprocess(x, day_idx, self.patch_size, self.patch_stride)  # (B, P, input_size)
        if states is None:
            states = self.h0.expand(self.n_layers, batch, self.n_units).contiguous()  # (L, B, H)
        output, hidden_states = self.gru(x, states.to(x.dtype))
        logits = self.out(output)
        if return_state:
            return logits, hidden_states
        return logits


@register("gru", "torch")
def build_gru_decoder(args, **shared) -> GRUDecoder:
    """The original trainer's ``GRUDecoder(...)`` from a config: the shared arguments plus ``model.n_layers``."""
    return GRUDecoder(n_layers=int(args["model"]["n_layers"]), **shared)
