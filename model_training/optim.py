"""AdamW parameter groups and the warmup + cosine learning-rate schedule (spec §6.3-6.4)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from model_training.lr_schedule import cosine_lr_factor


def parameter_groups(model: nn.Module, args: Mapping) -> list[dict]:
    """Three groups chosen by name, in the original's order (so its optimizer state loads):

    * ``bias`` (``gru.bias*``, ``out.bias``): lr_max, no weight decay;
    * ``day_layer`` (``day_*``): lr_max_day, weight_decay_day (absent when the model has no day layers);
    * ``other`` (GRU weights, ``out.weight`` and ``h0``): lr_max, weight_decay.
    """
    bias, day, other = [], [], []
    for name, p in model.named_parameters():
        if "gru.bias" in name or "out.bias" in name:
            bias.append(p)
        elif "day_" in name:
            day.append(p)
        else:
            other.append(p)
    groups = [{"params": bias, "weight_decay": 0, "group_type": "bias"}]
    if day:
        groups.append({"params": day, "lr": args["lr_max_day"], "weight_decay": args["weight_decay_day"],
                       "group_type": "day_layer"})
    groups.append({"params": other, "group_type": "other"})
    return groups


def create_optimizer(model: nn.Module, args: Mapping, groups: list[dict] | None = None) -> torch.optim.AdamW:
    """AdamW with the original's (large) eps = 0.1 and decoupled weight decay; fused where supported.
    ``groups`` replaces :func:`parameter_groups` (variants with their own grouping)."""
    groups = parameter_groups(model, args) if groups is None else groups
    kwargs = dict(lr=args["lr_max"], betas=(args["beta0"], args["beta1"]), eps=args["epsilon"],
                  weight_decay=args["weight_decay"])
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except RuntimeError:  # a device/dtype the fused kernel does not support: same maths, unfused
        return torch.optim.AdamW(groups, **kwargs)


def _lambda(min_ratio: float, warmup: int, decay: int) -> Callable[[int], float]:
    return lambda step: cosine_lr_factor(step, min_ratio, warmup, decay)


def create_lr_scheduler(optimizer: torch.optim.Optimizer, args: Mapping) -> torch.optim.lr_scheduler.LRScheduler:
    """``cosine``: LambdaLR with one factor per group (the day group has its own warmup/decay);
    ``linear``: LinearLR from 1 to lr_min/lr_max over lr_decay_steps, no warmup."""
    kind = args["lr_scheduler_type"]
    if kind == "linear":
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0,
                                                 end_factor=args["lr_min"] / args["lr_max"],
                                                 total_iters=args["lr_decay_steps"])
    if kind != "cosine":
        raise ValueError(f"lr_scheduler_type: expected 'cosine' or 'linear', got {kind!r}")
    rnn = _lambda(args["lr_min"] / args["lr_max"], args["lr_warmup_steps"], args["lr_decay_steps"])
    day = _lambda(args["lr_min_day"] / args["lr_max_day"], args["lr_warmup_steps_day"], args["lr_decay_steps_day"])
    lambdas = [day if g.get("group_type") == "day_layer" else rnn for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
