"""PGD against a dense task's own loss: adversarial examples for segmenters and detectors.

The attack is Madry et al.'s PGD (``pgd.py``) with the classifier's cross-entropy replaced by
the loss the model was trained with: the per-pixel cross-entropy of a segmenter, the
detection loss of a detector (Xie et al. 2017, "Adversarial Examples for Semantic
Segmentation and Object Detection", attack these losses the same way). There is no single
label to flip, so there is no "fooled" test and no restarts: the attack ascends the loss for
``steps`` steps and returns the last point, and what it did is read off the task's metric
(mIoU, mAP) on the attacked images.

``objective(outputs, targets)`` must be a sum, or a sum divided by a positive number, of
per-image terms: then each image's gradient direction does not depend on the others in its
batch, and neither does its (sign or normalised) step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from neuralab.attack.base import Attack, eval_mode, model_device
from neuralab.errors import UserError


class DensePGD(Attack):
    """``DensePGD(model, eps, alpha, steps, objective)(images, targets)``: ``steps`` projected
    steps of ``alpha`` up ``objective(model(x), targets)`` inside the eps-ball; ``steps=1``,
    ``alpha=eps`` and no random start is FGSM. ``self.losses`` holds the objective at each
    step and at the end (steps + 1 values)."""

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float,
        steps: int,
        objective: Callable[[Tensor, Tensor], Tensor],
        *,
        norm: str = "linf",
        random_start: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, eps, norm=norm, generator=generator)
        if alpha <= 0:
            raise UserError(f"alpha (the step size) must be > 0, got {alpha}")
        if steps < 1:
            raise UserError(f"steps must be >= 1, got {steps}")
        self.alpha, self.steps, self.random_start = float(alpha), steps, random_start
        self.objective = objective
        self.losses: list[float] = []

    def __call__(self, images: Tensor, targets: Tensor, target: None = None) -> Tensor:
        """Attacked copies of ``images`` (B, C, H, W) in [0, 1] given their ``targets`` (masks,
        box rows: whatever ``objective`` reads); ``images`` is never modified."""
        if len(targets) != len(images):
            raise UserError(f"need one target per image: {len(targets)} for {len(images)}")
        if self.eps == 0:
            return images.detach().clone()
        device = model_device(self.model, images.device)
        x, y = images.detach().to(device), targets.to(device)
        with eval_mode(self.model), torch.enable_grad():
            x_adv = self.perturb(x, y)
        return x_adv.detach().to(images.device, images.dtype)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self.random_point(x) if self.random_start else x
        losses = []
        for _ in range(self.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            loss = self.objective(self.model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            losses.append(loss.detach())
            x_adv = self.project(self.step(x_adv.detach(), grad, self.alpha), x)
        with torch.no_grad():
            losses.append(self.objective(self.model(x_adv), y))
        self.losses = torch.stack(losses).tolist()
        return x_adv
