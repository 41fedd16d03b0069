"""The adversarial TripleGRUDecoder (spec nnn §2): a noise model, a clean decoder and a noisy decoder.

Public API
----------
``gradient_reverse(x, lambd)`` / ``GradientReversalFn``: identity forward; backward ``-lambd * grad``,
    no gradient for ``lambd`` (a float or a 0-d tensor).
``NoiseModel(neural_dim, n_days, input_dropout, rnn_dropout, patch_size, patch_stride, n_layers=2)``:
    own day layers -> patches -> GRU whose hidden size is the patch size ``patch_size * neural_dim``
    (7168). ``forward(x [B, T, D], day_idx [B], states=None)`` -> ``(noise [B, P, N], state [L, B, N])``.
``CleanSpeechModel(neural_dim, n_units, n_days, n_classes, ..., n_layers=3)``: own day layers -> patches
    -> GRU(n_units) -> Linear(n_classes); a ``GRUDecoder`` with 3 layers.
``NoisySpeechModel(input_size, n_units, n_classes, rnn_dropout, n_layers=2)``: no day layers;
    ``forward(x_processed [B, P, N], states=None)`` -> ``(logits [B, P, C], state)``.
``TripleGRUDecoder(neural_dim, n_units, n_days, n_classes, rnn_dropout, input_dropout, patch_size,
    patch_stride, n_noise_layers=2, n_clean_layers=3, n_noisy_layers=2, noise_units=None,
    noisy_units=None, grl_skip_when_zero=True)``:
    ``forward(x [B, T, D], day_idx [B], states=None, return_state=False, mode='inference', grl_lambda=None)``
    * ``mode='full'`` -> ``(clean_logits [B, P, C], noisy_logits [B, P, C], noise_output [B, P, N])``;
    * ``mode='inference'`` -> ``clean_logits`` or ``(clean_logits, (noise_state, clean_state))`` with
      ``return_state``: the call of ``model_training.rnn_model.GRUDecoder``, so ``evaluate_model.py``
      and ``inference.infer_trial`` run it unchanged. ``states`` may be ``None``, the clean GRU's state
      ``[3, B, n_units]`` or the pair returned before (streaming).
    P = (T - patch_size) // patch_stride + 1, N = patch_size * neural_dim, C = n_classes.

Parameter names: ``noise_model.*``, ``clean_speech_model.*`` (incl. ``day_weights.N``), ``noisy_speech_model.*``.
The full config (512 features, 45 days, 14/4 patches, 768 units) has 687,568,466 parameters.
dtype rule (spec §2.6): every stage is cast back to the input's dtype (after patching, the residual, the
GRL and every h0 expansion), so pure-bf16 models and fp32 models under bf16 autocast both type-check.
"""

from __future__ import annotations

import torch
from torch import nn

from model_training.architectures import register
from model_training.rnn_model import DayLayerMixin, make_gru
from model_training_nnn.adversarial import triple_gru_kwargs

__all__ = ["GradientReversalFn", "gradient_reverse", "NoiseModel", "CleanSpeechModel", "NoisySpeechModel",
           "build_triple_gru_decoder",
           "TripleGRUDecoder"]


class GradientReversalFn(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-lambd`` (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float | torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.lambd = lambd.detach() if torch.is_tensor(lambd) else float(lambd)
        return x.view_as(x)  # same dtype and values

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad * (-ctx.lambd), None  # no gradient for lambd (the TF port's "GRL errors")


def gradient_reverse(x: torch.Tensor, lambd: float | torch.Tensor) -> torch.Tensor:
    """``x`` unchanged in the forward pass; ``-lambd * grad`` in the backward pass.

    Args:
        x: any tensor.
        lambd: the reversal strength; a float or a 0-d tensor (a tensor avoids recompiles per value).

    Returns:
        A view of ``x`` with the same dtype.
    """
    return GradientReversalFn.apply(x, lambd)


def _initial_state(h0: nn.Parameter, n_layers: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """The learnable ``h0 [1, 1, H]`` expanded to ``[n_layers, batch, H]`` in ``dtype``."""
    return h0.expand(n_layers, batch, h0.size(-1)).contiguous().to(dtype)  # (L, B, H)


class NoiseModel(DayLayerMixin, nn.Module):
    """Own day layers -> patches -> ``n_layers`` GRU with hidden = input size: the noise estimate."""

    def __init__(self, neural_dim: int, n_days: int, input_dropout: float = 0.0, rnn_dropout: float = 0.0,
                 patch_size: int = 14, patch_stride: int = 4, n_layers: int = 2, noise_units: int | None = None):
        super().__init__()
        self.patch_size, self.patch_stride, self.n_layers = patch_size, patch_stride, n_layers
        self.input_size = neural_dim * patch_size if patch_size > 0 else neural_dim
        self.n_units = noise_units or self.input_size
        if self.n_units != self.input_size:
            raise ValueError(f"noise_units: must equal patch_size * neural_dim = {self.input_size} (the noise "
                             f"estimate is subtracted from the patched input), got {self.n_units}")
        self._init_day_layers(neural_dim, n_days, input_dropout)
        self.gru = make_gru(self.input_size, self.n_units, n_layers, rnn_dropout)
        self.h0 = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(1, 1, self.n_units)))

    def forward(self, x: torch.Tensor, day_idx: torch.Tensor,
                states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T, D]`` -> ``(noise [B, P, N], state [n_layers, B, N])``, in ``x``'s dtype."""
        batch, dtype = x.size(0), x.dtype
        x = self.preprocess(x, day_idx, self.patch_size, self.patch_stride)  # (B, P, N)
        if states is None:
            states = _initial_state(self.h0, self.n_layers, batch, dtype)
        out, hidden = self.gru(x, states.to(dtype))
        return out.to(dtype), hidden


class CleanSpeechModel(DayLayerMixin, nn.Module):
    """Own day layers -> patches -> GRU(n_units) -> Linear: the decoder of the denoised input."""

    def __init__(self, neural_dim: int, n_units: int, n_days: int, n_classes: int, rnn_dropout: float = 0.0,
                 input_dropout: float = 0.0, patch_size: int = 14, patch_stride: int = 4, n_layers: int = 3):
        super().__init__()
        self.patch_size, self.patch_stride, self.n_layers, self.n_units = patch_size, patch_stride, n_layers, n_units
        self.input_size = neural_dim * patch_size if patch_size > 0 else neural_dim
        self._init_day_layers(neural_dim, n_days, input_dropout)
        self.gru = make_gru(self.input_size, n_units, n_layers, rnn_dropout)
        self.out = nn.Linear(n_units, n_classes)
        nn.init.xavier_uniform_(self.out.weight)
        self.h0 = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(1, 1, n_units)))

    def forward_processed(self, x_processed: torch.Tensor,
                          states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Already preprocessed ``[B, P, N]`` -> ``(logits [B, P, C], state [n_layers, B, n_units])``."""
        batch, dtype = x_processed.size(0), x_processed.dtype
        if states is None:
            states = _initial_state(self.h0, self.n_layers, batch, dtype)
        out, hidden = self.gru(x_processed, states.to(dtype))
        return self.out(out), hidden

    def forward(self, x: torch.Tensor, day_idx: torch.Tensor, states: torch.Tensor | None = None,
                return_state: bool = False):
        """Standalone use (no denoising): ``x [B, T, D]`` -> logits ``[B, P, C]`` (and the state)."""
        logits, hidden = self.forward_processed(self.preprocess(x, day_idx, self.patch_size, self.patch_stride),
                                                states)
        return (logits, hidden) if return_state else logits


class NoisySpeechModel(nn.Module):
    """GRU(n_units) -> Linear on the (gradient-reversed) noise estimate: the adversary. No day layers."""

    def __init__(self, input_size: int, n_units: int, n_classes: int, rnn_dropout: float = 0.0, n_layers: int = 2):
        super().__init__()
        self.n_layers, self.n_units = n_layers, n_units
        self.gru = make_gru(input_size, n_units, n_layers, rnn_dropout)
        self.out = nn.Linear(n_units, n_classes)
        nn.init.xavier_uniform_(self.out.weight)
        self.h0 = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(1, 1, n_units)))

    def forward(self, x: torch.Tensor, states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, P, N]`` -> ``(logits [B, P, C], state [n_layers, B, n_units])``."""
        batch, dtype = x.size(0), x.dtype
        if states is None:
            states = _initial_state(self.h0, self.n_layers, batch, dtype)
        out, hidden = self.gru(x, states.to(dtype))
        return self.out(out), hidden


class TripleGRUDecoder(nn.Module):
    """Noise model + clean decoder on ``x_processed - noise`` + adversarial noisy decoder behind a GRL."""

    def __init__(self, neural_dim: int, n_units: int, n_days: int, n_classes: int, rnn_dropout: float = 0.0,
                 input_dropout: float = 0.0, patch_size: int = 14, patch_stride: int = 4, n_noise_layers: int = 2,
                 n_clean_layers: int = 3, n_noisy_layers: int = 2, noise_units: int | None = None,
                 noisy_units: int | None = None, grl_skip_when_zero: bool = True):
        super().__init__()
        self.neural_dim, self.n_units, self.n_days, self.n_classes = neural_dim, n_units, n_days, n_classes
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.grl_skip_when_zero = grl_skip_when_zero
        self.noise_model = NoiseModel(neural_dim, n_days, input_dropout, rnn_dropout, patch_size, patch_stride,
                                      n_noise_layers, noise_units)
        self.clean_speech_model = CleanSpeechModel(neural_dim, n_units, n_days, n_classes, rnn_dropout,
                                                   input_dropout, patch_size, patch_stride, n_clean_layers)
        self.noisy_speech_model = NoisySpeechModel(self.noise_model.input_size, noisy_units or n_units, n_classes,
                                                   rnn_dropout, n_noisy_layers)

    def _apply_preprocessing(self, x: torch.Tensor, day_idx: torch.Tensor) -> torch.Tensor:
        """The clean model's day layers + patching: ``[B, T, D]`` -> ``x_processed [B, P, N]`` (x's dtype)."""
        clean = self.clean_speech_model
        return clean.preprocess(x, day_idx, clean.patch_size, clean.patch_stride)

    def _clean_forward_with_processed_input(self, x: torch.Tensor, states: torch.Tensor | None = None):
        return self.clean_speech_model.forward_processed(x, states)

    def _noisy_forward_with_processed_input(self, x: torch.Tensor, states: torch.Tensor | None = None):
        return self.noisy_speech_model(x, states)

    def _reverse(self, noise_output: torch.Tensor, grl_lambda: float | torch.Tensor | None) -> torch.Tensor:
        # The seed's quirk: a falsy lambda (None, 0) skips the GRL, so the noisy CTC gradient reaches the
        # noise model with a positive sign. Kept when grl_skip_when_zero (spec §2.5); a tensor lambda is
        # always applied (the caller decides on the host: reading a device tensor here would sync).
        if grl_lambda is None:
            return noise_output
        if not torch.is_tensor(grl_lambda) and float(grl_lambda) == 0.0 and self.grl_skip_when_zero:
            return noise_output
        return gradient_reverse(noise_output, grl_lambda)

    def forward(self, x: torch.Tensor, day_idx: torch.Tensor, states=None, return_state: bool = False,
                mode: str = "inference", grl_lambda: float | torch.Tensor | None = None):
        """See the module docstring. ``x [B, T, D]``, ``day_idx [B]`` (int64)."""
        if mode not in ("full", "inference"):
            raise ValueError(f"mode: expected 'full' or 'inference', got {mode!r}")
        noise_state = clean_state = None
        if isinstance(states, (tuple, list)):
            noise_state, clean_state = states
        elif states is not None:
            clean_state = states
        noise_output, noise_hidden = self.noise_model(x, day_idx, noise_state)  # (B, P, N)
        x_processed = self._apply_preprocessing(x, day_idx)  # (B, P, N)
        dtype = x_processed.dtype
        denoised = (x_processed - noise_output.to(dtype)).to(dtype)  # residual denoising
        clean_logits, clean_hidden = self._clean_forward_with_processed_input(denoised, clean_state)
        if mode == "inference":
            return (clean_logits, (noise_hidden, clean_hidden)) if return_state else clean_logits
        noisy_input = self._reverse(noise_output, grl_lambda).to(dtype)
        noisy_logits, _ = self._noisy_forward_with_processed_input(noisy_input)
        return clean_logits, noisy_logits, noise_output


@register("triple_gru", "torch")
def build_triple_gru_decoder(args, **shared) -> TripleGRUDecoder:
    """``TripleGRUDecoder`` from a config (``model.architecture: triple_gru``): the shared arguments of
    ``model_training.architectures`` plus ``model_training_nnn.adversarial.triple_gru_kwargs``."""
    return TripleGRUDecoder(**triple_gru_kwargs(args), **shared)
