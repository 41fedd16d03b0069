"""The baseline phoneme decoder (spec §5): day layers -> 14-bin patches -> 5-layer GRU -> 41 logits.

Constructor arguments and parameter names are the original's (``day_weights.N``, ``day_biases.N``,
``gru.*``, ``out.*``, ``h0``), so the released ``best_checkpoint`` loads unchanged. Modules are
built in the original's order, which fixes how the torch RNG is consumed at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


def patchify(x: torch.Tensor, patch_size: int, patch_stride: int) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, P, patch_size * D]``, P = (T - patch_size) // patch_stride + 1.

    Each window is flattened time-major (index k * D + f for bin k of the window and channel f),
    i.e. ``patch_size`` consecutive frames concatenated. Tail bins that fill no window are dropped.
    """
    b, _, d = x.shape
    windows = x.unfold(1, patch_size, patch_stride)  # [B, P, D, patch_size]
    return windows.transpose(2, 3).reshape(b, windows.shape[1], patch_size * d)


class GRUDecoder(nn.Module):
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
        self.day_layer_activation = nn.Softsign()
        self.day_weights = nn.ParameterList([nn.Parameter(torch.eye(neural_dim)) for _ in range(n_days)])
        self.day_biases = nn.ParameterList([nn.Parameter(torch.zeros(1, neural_dim)) for _ in range(n_days)])
        self.day_layer_dropout = nn.Dropout(input_dropout)

        self.input_size = neural_dim * patch_size if patch_size > 0 else neural_dim
        self.gru = nn.GRU(input_size=self.input_size, hidden_size=n_units, num_layers=n_layers,
                          dropout=rnn_dropout, batch_first=True, bidirectional=False)
        for name, param in self.gru.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(param)
            if "weight_ih" in name:
                nn.init.xavier_uniform_(param)

        self.out = nn.Linear(n_units, n_classes)
        nn.init.xavier_uniform_(self.out.weight)

        # One learnable initial state, shared by every layer and every trial.
        self.h0 = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(1, 1, n_units)))

    def forward(self, x: torch.Tensor, day_idx: torch.Tensor, states: torch.Tensor | None = None,
                return_state: bool = False):
        """``x [B, T, neural_dim]``, ``day_idx [B]`` -> logits ``[B, P, n_classes]`` (and the GRU state)."""
        # Only the days present in the batch take part in the graph: absent days get no gradient,
        # so AdamW leaves them untouched, as in the original.
        day_weights = torch.stack([self.day_weights[int(i)] for i in day_idx], dim=0)
        day_biases = torch.cat([self.day_biases[int(i)] for i in day_idx], dim=0).unsqueeze(1)
        x = torch.einsum("btd,bdk->btk", x, day_weights) + day_biases
        x = self.day_layer_activation(x)
        if self.input_dropout > 0:
            x = self.day_layer_dropout(x)
        if self.patch_size > 0:
            x = patchify(x, self.patch_size, self.patch_stride)
        if states is None:
            states = self.h0.expand(self.n_layers, x.shape[0], self.n_units).contiguous()
        output, hidden_states = self.gru(x, states)
        logits = self.out(output)
        if return_state:
            return logits, hidden_states
        return logits
