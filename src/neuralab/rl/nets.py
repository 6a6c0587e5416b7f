"""Pieces every algorithm shares: MLPs with CleanRL's initialisation, the optimizer,
the learning-rate schedule and observation batches."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from neuralab.rl.config import NetConfig, OptimConfig


def mlp(in_dim: int, out_dim: int, cfg: NetConfig, out_std: float = 1.0) -> nn.Sequential:
    """Linear layers with ``cfg.hidden`` units; orthogonal init, gain sqrt(2) inside and
    ``out_std`` on the output (small for a policy, so it starts near uniform)."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[cfg.activation]
    sizes = [in_dim, *cfg.hidden]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [_init(nn.Linear(a, b), math.sqrt(2)), act()]
    layers.append(_init(nn.Linear(sizes[-1], out_dim), out_std))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, std: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "rmsprop":  # pg-pong's update: cache = decay*cache + (1-decay)*g²
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.decay, eps=cfg.eps)
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps)


def anneal(optimizer: torch.optim.Optimizer, cfg: OptimConfig, done: float) -> float:
    """Set the learning rate for a run ``done`` (0..1) of the way through; returns it."""
    lr = cfg.lr * (1.0 - done) if cfg.anneal_lr else cfg.lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def clip_and_step(optimizer: torch.optim.Optimizer, module: nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    optimizer.step()


def as_batch(obs: np.ndarray) -> torch.Tensor:
    """Observations (int8 Pong differences or float vectors) as a float32 tensor."""
    return torch.as_tensor(np.asarray(obs), dtype=torch.float32)
