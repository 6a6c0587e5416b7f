"""The Fast Gradient Sign Method: one gradient step to the edge of the eps-ball.

Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples": a model that
is close to linear in its input is fooled by x + eps * sign(grad_x loss), the Linf-steepest step.
For L2 the steepest step is eps * grad / ||grad||_2 (the "fast gradient method").

With ``random_start=True`` this is the attack of Wong, Rice & Kolter 2020, "Fast is better than
free: Revisiting adversarial training": start at a uniform point of the eps-ball and step
alpha = 1.25 * eps, then project back. It is the cheap attack that makes FGSM adversarial
training work.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuralab.attack.base import Attack
from neuralab.errors import UserError


class FGSM(Attack):
    """``FGSM(model, eps)(images, labels)``: one signed (Linf) or normalised (L2) gradient step.

    ``alpha`` is the step size: eps by default, 1.25 * eps with ``random_start`` (Wong et al.).
    The result is always projected onto the eps-ball and [0, 1].
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        *,
        norm: str = "linf",
        targeted: bool = False,
        random_start: bool = False,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(
            model, eps, norm=norm, targeted=targeted, generator=generator, precision=precision
        )
        if alpha is not None and alpha <= 0:
            raise UserError(f"alpha (the step size) must be > 0, got {alpha}")
        self.random_start = random_start
        self.alpha = alpha if alpha is not None else (1.25 if random_start else 1.0) * self.eps

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self.random_point(x) if self.random_start else x
        _, grad = self.loss_and_grad(x_adv, y)
        return self.project(self.step(x_adv, grad, self.alpha), x)
