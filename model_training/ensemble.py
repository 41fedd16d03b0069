"""Ensembles at evaluation: the arithmetic mixture of several models' per-frame phoneme probabilities.

``evaluate_model.py --model_path A B C`` wraps the loaded models in :class:`EnsembleModel`, which the evaluator
calls exactly like one model, so one logit stream per trial goes to the LM server::

    log p(c | frame) = log( mean_m softmax(logits_m)[c] )        (model class order, [B, P, 41])

The mixture is of probabilities (arithmetic), not of log-probabilities (geometric): on real data others cut
PER 7.33 -> 6.36 % with it over 12 models. The mixed log-probabilities are what the evaluator then treats as
"logits": it reorders them to LM class order (``phonemes.model_to_lm_order``) and the LM server applies its
log-softmax (a no-op on normalised log-probabilities), its blank penalty (blank -= ln(blank_penalty)) and
acoustic scale to them, after mixing, exactly as for one model's logits.

The members must share the frame rate (``patch_size``, ``patch_stride``), the class count, the session list
(day indices) and the evaluation smoothing, because the evaluator prepares one input for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nejm_b2txt_utils.cli_errors import ConfigError

#: args.yaml keys every member must agree on (the evaluator smooths and indexes days once for all).
SHARED_KEYS = ("dataset.sessions", "dataset.n_classes", "model.patch_size", "model.patch_stride",
               "dataset.data_transforms.smooth_data", "dataset.data_transforms.smooth_kernel_std",
               "dataset.data_transforms.smooth_kernel_size", "dataset.feature_subset")


def mix_log_probs(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Arithmetic mixture: ``log(mean_m softmax(logits_m))`` over the class axis (last).

    Args:
        logits: M tensors ``[..., C]`` of equal shape (unnormalised logits or log-probabilities).

    Returns:
        ``[..., C]`` float32 log-probabilities (logsumexp of the members' log-softmax minus log M).

    Raises:
        ValueError: no members, or members of different shapes.
    """
    if not logits:
        raise ValueError("mix_log_probs: expected at least one member")
    shapes = {tuple(t.shape) for t in logits}
    if len(shapes) != 1:
        raise ValueError(f"mix_log_probs: members have different shapes {sorted(shapes)}")
    log_p = torch.stack([t.float().log_softmax(-1) for t in logits], dim=0)  # (M, ..., C)
    return torch.logsumexp(log_p, dim=0) - math.log(len(logits))


class EnsembleModel:
    """M models called as one: ``model(x, day_idx, states=None, return_state=False)`` -> mixed log-probabilities
    ``[B, P, C]`` (the state, when asked for, is the list of the members' states). Members are loaded models in
    eval mode on their device (torch modules, or any loader's callable with the same call)."""

    def __init__(self, models: Sequence):
        if not models:
            raise ValueError("EnsembleModel: expected at least one model")
        self.members = list(models)
        first = models[0]
        self.patch_size, self.patch_stride = first.patch_size, first.patch_stride
        self.n_classes = first.n_classes

    def __call__(self, x: torch.Tensor, day_idx: torch.Tensor, states: list | None = None, return_state: bool = False):
        """``x [B, T, D]``, ``day_idx [B]`` -> ``[B, P, C]`` log-probabilities (and the members' states)."""
        states = states if states is not None else [None] * len(self.members)
        outs = [m(x, day_idx, states=s, return_state=True) for m, s in zip(self.members, states)]
        mixed = mix_log_probs([logits for logits, _ in outs])  # (B, P, C)
        return (mixed, [s for _, s in outs]) if return_state else mixed


def check_compatible(paths: Sequence[str], model_args: Sequence) -> None:
    """Raise ``ConfigError`` naming the first member whose args.yaml differs from the first's on a
    :data:`SHARED_KEYS` key (frame rate, classes, sessions, smoothing, feature subset)."""
    from omegaconf import OmegaConf

    def value(args, key):
        v = OmegaConf.select(args, key, default=None)
        return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v

    for path, args in zip(paths[1:], model_args[1:]):
        for key in SHARED_KEYS:
            a, b = value(model_args[0], key), value(args, key)
            if a != b:
                raise ConfigError(f"{path}/checkpoint/args.yaml: {key} is {b!r} but {paths[0]}'s is {a!r}; an "
                                  "ensemble's models must share frame rate, classes, sessions and smoothing")


def load_ensemble(paths: Sequence[str], device, load_model) -> tuple[object, object]:
    """Load every model with ``load_model(path, device) -> (model, args)``; one path gives that model unwrapped.

    Returns:
        ``(model or EnsembleModel, the first model's args.yaml)``.

    Raises:
        ConfigError: the models disagree on a :data:`SHARED_KEYS` key.
    """
    loaded = [load_model(p, device) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    check_compatible([str(p) for p in paths], [a for _, a in loaded])
    return EnsembleModel([m for m, _ in loaded]), loaded[0][1]
