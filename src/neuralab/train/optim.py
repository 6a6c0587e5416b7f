"""Optimizers and learning-rate schedules.

Schedules are pure functions of the step, so a resumed run needs nothing but
the step to continue the schedule exactly (no scheduler state to save).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from neuralab.config import OptimConfig, SchedConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weights of convs and linears only; never biases or normalisation parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    # fused: one kernel for the whole update instead of a handful per tensor (~15% of a small
    # GPT's step on a CPU), the same update rule
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def lr_factor(cfg: SchedConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    cosine: linear warm-up over ``warmup`` of the steps, then cosine decay to
    ``min_lr`` (Loshchilov & Hutter 2017, SGDR without restarts).
    linear: the same warm-up, then a straight line down to ``min_lr`` at the end; with no
    warm-up and no floor it is PPO's annealing of the learning rate to 0 (Schulman et al.
    2017), ``1 - step / total_steps``, which ``neuralab.rl`` uses.
    onecycle: cosine rise from lr/25 to lr over the first 30% of steps, then cosine
    annealing to lr/25e4 (Smith & Topin 2019; PyTorch's OneCycleLR defaults, without
    the momentum cycling).
    """
    total = max(total_steps, 1)
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "onecycle":
        rise = max(int(0.3 * total), 1)
        start, end = 1 / 25, 1 / 25e4
        if step < rise:
            return start + (1 - start) * (1 - math.cos(math.pi * step / rise)) / 2
        t = (step - rise) / max(total - rise, 1)
        return end + (1 - end) * (1 + math.cos(math.pi * t)) / 2
    warmup = int(cfg.warmup * total)
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    if cfg.name == "linear":
        return cfg.min_lr + (1 - cfg.min_lr) * (1 - t)
    return cfg.min_lr + (1 - cfg.min_lr) * (1 + math.cos(math.pi * t)) / 2


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
