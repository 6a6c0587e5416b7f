"""Plain optimizer steps for the short trainings that probes run inside a measurement (a
batch overfitted by ``neuralab check``, the nets of the vanishing-gradient study, the
from-scratch rows of label efficiency): no run directory, no checkpoints, no validation.
Runs that a user trains go through ``neuralab.train.loop.fit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from neuralab.train.optim import set_lr

LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Any]]


@dataclass
class StepsDone:
    steps: int  # optimizer steps taken
    diverged: bool  # stopped because the loss was not finite (before stepping on it)


def train_steps(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Callable[[int], tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    lr_at: Callable[[int], float] | None = None,
    loss_scale: float = 1.0,
    after_step: Callable[[int, Tensor, Any], bool | None] | None = None,
) -> StepsDone:
    """Up to ``steps`` optimizer steps, in train mode, on ``batch(step)``: the learning rate
    ``lr_at(step)`` (when given), ``loss_fn(model, x, y) -> (loss, extra)``, a backward pass of
    ``loss * loss_scale`` and the step. ``after_step(steps_done, loss, extra)`` sees each step
    (gradients still in place) and stops training by returning True. A loss that is not finite
    stops training before its backward pass."""
    model.train()
    for step in range(steps):
        x, y = batch(step)
        if lr_at is not None:
            set_lr(optimizer, lr_at(step))
        loss, extra = loss_fn(model, x, y)
        if not math.isfinite(loss.item()):
            return StepsDone(step, diverged=True)
        optimizer.zero_grad(set_to_none=True)
        (loss * loss_scale if loss_scale != 1.0 else loss).backward()
        optimizer.step()
        if after_step is not None and after_step(step + 1, loss, extra):
            return StepsDone(step + 1, diverged=False)
    return StepsDone(steps, diverged=False)
