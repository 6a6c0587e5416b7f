"""Pieces every algorithm shares: MLPs with CleanRL's initialisation, the optimizer,
the learning-rate schedule and observation batches.

The schedule is the training loop's own (``neuralab.train.optim.lr_factor``, "linear" or
"constant"); the optimizer is not: see ``build_optimizer``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from neuralab.config import SchedConfig
from neuralab.rl.config import NetConfig, RLOptimConfig
from neuralab.train.optim import lr_factor, set_lr

# optim.anneal_lr: linearly to 0 over the run (no warm-up, no floor), as CleanRL's PPO does
SCHEDULES = {
    True: SchedConfig(name="linear", warmup=0.0, min_lr=0.0),
    False: SchedConfig(name="constant"),
}


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


def build_optimizer(params, cfg: RLOptimConfig) -> torch.optim.Optimizer:
    """Adam with eps 1e-5 (CleanRL) or RMSProp (pg-pong) on every parameter alike.

    Not ``neuralab.train.optim.build_optimizer``: that one makes fused AdamW (eps 1e-8) or
    SGD with weight-decay parameter groups; neither optimizer nor eps is RL's, and the
    checkpointed optimizer state would change shape with the groups.
    """
    if cfg.name == "rmsprop":  # pg-pong's update: cache = decay*cache + (1-decay)*g²
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.decay, eps=cfg.eps)
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps)


def anneal(
    optimizer: torch.optim.Optimizer, cfg: RLOptimConfig, env_steps: int, total_steps: int
) -> float:
    """Set the learning rate for a run ``env_steps`` of ``total_steps`` in; returns it."""
    lr = cfg.lr * lr_factor(SCHEDULES[cfg.anneal_lr], env_steps, total_steps)
    set_lr(optimizer, lr)
    return lr


def clip_and_step(optimizer: torch.optim.Optimizer, module: nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    optimizer.step()


def as_batch(obs: np.ndarray) -> torch.Tensor:
    """Observations (int8 Pong differences or float vectors) as a float32 tensor."""
    return torch.as_tensor(np.asarray(obs), dtype=torch.float32)
