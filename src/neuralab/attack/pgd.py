"""Projected Gradient Descent: the strongest first-order attack, and the one to report.

Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks": maximise the loss inside the eps-ball by repeating a small steepest-ascent
step of size alpha (signed gradient for Linf, normalised gradient for L2) and projecting back onto
the ball and [0, 1]. Starting from a uniform random point of the ball and restarting several
times finds worse examples than FGSM's single step; their paper shows the loss maxima found from
random starts are all of similar value, which is why PGD robustness is a meaningful number.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuralab.attack.base import Attack
from neuralab.errors import UserError


class PGD(Attack):
    """``PGD(model, eps, alpha, steps)(images, labels)``: ``steps`` projected steps of ``alpha``.

    With ``restarts > 1`` (which needs ``random_start``) each example keeps the worst case over
    the restarts: one that fools the model (untargeted: misclassified; targeted: classified as
    the target), else the one with the highest loss (targeted: lowest target loss). The first
    restart starts at x itself and the others at random points, so several restarts are never
    weaker than the attack without a random start.

    After a call, ``self.losses[r][k]`` is the mean cross-entropy over the batch at step k of
    restart r (k = 0 is the starting point, so each list has steps + 1 values): of the true
    class for untargeted attacks (it rises), of the target class for targeted ones (it falls).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float,
        steps: int,
        *,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        targeted: bool = False,
        generator: torch.Generator | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(
            model, eps, norm=norm, targeted=targeted, generator=generator, precision=precision
        )
        if alpha <= 0:
            raise UserError(f"alpha (the step size) must be > 0, got {alpha}")
        if steps < 1:
            raise UserError(f"steps must be >= 1, got {steps}")
        if restarts < 1:
            raise UserError(f"restarts must be >= 1, got {restarts}")
        if restarts > 1 and not random_start:
            raise UserError("restarts > 1 repeat the same attack unless random_start=True")
        self.alpha = float(alpha)
        self.steps = steps
        self.random_start = random_start
        self.restarts = restarts
        self.losses: list[list[float]] = []

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        self.losses = []
        best = x.clone()
        best_fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_score = torch.full((len(x),), -torch.inf, dtype=torch.float32, device=x.device)
        for restart in range(self.restarts):
            from_x = not self.random_start or (restart == 0 and self.restarts > 1)
            x_adv = x if from_x else self.random_point(x)
            curve = []
            for _ in range(self.steps):
                loss, grad = self.loss_and_grad(x_adv, y)
                curve.append(loss.mean())
                x_adv = self.project(self.step(x_adv, grad, self.alpha), x)
            with torch.no_grad():
                logits = self.logits(x_adv)  # (B, num_classes)
                loss = self.criterion(logits, y)  # (B,)
            curve.append(loss.mean())
            self.losses.append(torch.stack(curve).tolist())  # one device sync per restart
            pred = logits.argmax(dim=1)
            fooled = pred == y if self.targeted else pred != y
            score = (-loss if self.targeted else loss).float()
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (score > best_score))
            best[better] = x_adv[better]
            best_fooled |= fooled
            best_score = torch.where(better, score, best_score)
        return best
