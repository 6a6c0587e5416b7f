"""Robust accuracy and robustness curves: how much accuracy survives an attack of budget eps.

An example counts as robust only if the model classifies it correctly both clean and attacked;
a point that is already misclassified was never robust, whatever the attack returns for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from neuralab.attack.base import Attack, eval_mode, model_device
from neuralab.errors import UserError


def _batches(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) batches, each moved to the model's device as it is needed."""
    if len(images) == 0:
        raise UserError("no images to evaluate")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model, images.device)
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        yield x.to(device), y.to(device)


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """(B,) bool: does the model, in eval mode, classify each of ``x`` as ``y``?"""
    with eval_mode(model):
        return model(x).argmax(dim=1) == y


def robust_accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, attack: Attack, batch_size: int = 500
) -> tuple[float, Tensor]:
    """(accuracy under ``attack``, (N,) bool mask on the CPU of the robust examples).

    Robust means correct on the clean image AND on its attacked version. Batches are moved to
    the model's device one at a time, so ``images`` may stay on the CPU.
    """
    masks = []
    for x, y in _batches(model, images, labels, batch_size):
        robust = _correct(model, x, y) & _correct(model, attack(x, y), y)  # (B,)
        masks.append(robust.cpu())
    mask = torch.cat(masks)
    return mask.float().mean().item(), mask


def robustness_curve(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    make_attack: Callable[[float], Attack],
    eps_list: Sequence[float],
    *,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Robust accuracy at each eps of ``eps_list`` (sorted ascending), as a JSON-able dict.

    ``make_attack(eps)`` builds the attack for one budget. Torch's CPU RNG is seeded with
    ``seed`` before each eps (and restored afterwards), so every point of the curve is
    reproducible on its own and random starts that use the global RNG are covered.

    The reported robust accuracy is monotone by construction: an example broken at a smaller
    eps counts as broken at every larger eps (the masks are AND-ed cumulatively). Any attack
    that succeeds within eps also succeeds within a larger eps (the smaller ball is inside the
    larger one), so this is the honest bound; a curve that rose with eps would only show that
    the attack missed examples it could have broken.

    Returns ``{"n", "seed", "clean_acc", "results": [{"eps", "robust_acc"}, ...],
    "images_per_s"}``, where images_per_s counts attacked images over the whole curve.
    """
    if len(eps_list) == 0:
        raise UserError("eps_list is empty; give at least one eps")
    start = time.perf_counter()
    batches = _batches(model, images, labels, batch_size)
    robust = torch.cat([_correct(model, x, y).cpu() for x, y in batches])  # (N,) clean correct
    clean_acc = robust.float().mean().item()
    results = []
    for eps in sorted(eps_list):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            _, mask = robust_accuracy(model, images, labels, make_attack(eps), batch_size)
        robust &= mask
        results.append({"eps": float(eps), "robust_acc": robust.float().mean().item()})
    seconds = time.perf_counter() - start
    return {
        "n": len(images),
        "seed": seed,
        "clean_acc": clean_acc,
        "results": results,
        "images_per_s": len(images) * len(eps_list) / seconds,
    }
