"""Adversarial training: the loss of a batch is taken on attacked inputs.

- ``pgd``: Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
  Attacks": minimise the cross-entropy of PGD examples (random start).
- ``fgsm``: Wong et al. 2020, "Fast is better than free": one FGSM step of 1.25·eps from a
  uniform random start in the eps-ball; about as robust as PGD-AT at a fraction of the cost,
  but prone to catastrophic overfitting, which the validation monitor below watches for.
- ``trades``: Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and
  Accuracy": clean cross-entropy + beta · KL(f(x) || f(x')), where x' maximises that KL.

Attacks always run with the model in eval mode (BatchNorm statistics are not updated by
the attack's forward passes) and draw their random start from torch's global RNG, whose
state every checkpoint saves, so adversarial runs resume exactly too.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab import data
from neuralab.attack import FGSM, PGD, robust_accuracy
from neuralab.config import AdvConfig, RunConfig
from neuralab.tasks.base import TASKS
from neuralab.tasks.classify import ClassifyTask


def trades_example(model: nn.Module, x: Tensor, eps: float, alpha: float, steps: int) -> Tensor:
    """The inner maximisation of TRADES: Linf PGD on KL(f(x) || f(x')), started at
    x + 0.001·N(0, 1), not clipped to [0, 1] until after the first step, as in the authors'
    ``trades.py``. Leaves no gradient on the parameters."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        x_adv = x + 0.001 * torch.randn_like(x)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    finally:
        model.train(was_training)
    return x_adv.detach().clamp(0, 1)  # a no-op after any step; steps=0 returns the start


def catastrophic_overfitting(
    best_robust: float, robust: float, last_fgsm: float | None, fgsm: float
) -> bool:
    """PGD accuracy fell below half its best (once it had passed 0.2) while FGSM accuracy
    rose since the last validation: the signature of catastrophic overfitting in FGSM
    training, where the model learns to mask the single-step gradient."""
    collapsed = best_robust > 0.2 and robust < 0.5 * best_robust
    return collapsed and last_fgsm is not None and fgsm > last_fgsm


@TASKS.register("adversarial")
class AdversarialTask(ClassifyTask):
    """Classification trained on adversarial examples, validated on clean and attacked data."""

    weighs_classes = False

    monitors = ("val/acc", "val/loss", "val/robust_acc", "val/fgsm_acc")

    def __init__(self, num_classes: int, adv: AdvConfig, label_smoothing: float = 0.0) -> None:
        super().__init__(num_classes, label_smoothing)
        self.adv = adv
        self.alpha = adv.alpha or (
            1.25 * adv.eps if adv.method == "fgsm" else 2.5 * adv.eps / max(adv.steps, 1)
        )
        self._best_robust = 0.0
        self._last_fgsm = None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> AdversarialTask:
        spec = data.DATASETS.get(cfg.data.name)
        return cls(spec.num_classes, cfg.adv, label_smoothing=cfg.train.label_smoothing)

    def state_dict(self) -> dict[str, Any]:
        """The catastrophic-overfitting monitor's memory, so a resumed run keeps watching."""
        return {"best_robust": self._best_robust, "last_fgsm": self._last_fgsm}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self._best_robust = saved.get("best_robust", 0.0)
        self._last_fgsm = saved.get("last_fgsm")

    def attack(self, model: nn.Module) -> FGSM | PGD:
        """The training attack for ``model``."""
        if self.adv.method == "fgsm":
            return FGSM(model, self.adv.eps, random_start=True, alpha=self.alpha)
        return PGD(model, self.adv.eps, self.alpha, self.adv.steps, random_start=True)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.adv.method == "trades":
            x_adv = trades_example(model, x, self.adv.eps, self.alpha, self.adv.steps)
            clean, attacked = model(x), model(x_adv)
            robust = F.kl_div(
                F.log_softmax(attacked, dim=1), F.softmax(clean, dim=1), reduction="batchmean"
            )
            loss = F.cross_entropy(clean, y, label_smoothing=self.label_smoothing)
            loss = loss + self.adv.trades_beta * robust
            correct = (attacked.detach().argmax(dim=1) == y).sum()
            return loss, {"correct": correct, "count": torch.tensor(len(y))}
        return super().loss(model, self.attack(model)(x, y), y)

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """Clean loss/accuracy on the whole val split; PGD and FGSM accuracy on its first
        ``adv.val_n`` images. Warns of catastrophic overfitting (Wong et al. 2020, §5): PGD
        accuracy collapsing while FGSM accuracy rises."""
        metrics = super().validate(model, x, y, batch_size)
        xs, ys = x[: self.adv.val_n], y[: self.adv.val_n]
        eps, steps = self.adv.eps, self.adv.val_steps
        same_starts = torch.Generator().manual_seed(0)  # comparable from one validation to the next
        pgd = PGD(model, eps, 2.5 * eps / steps, steps, random_start=True, generator=same_starts)
        metrics["val/robust_acc"] = robust_accuracy(model, xs, ys, pgd, batch_size)[0]
        metrics["val/fgsm_acc"] = robust_accuracy(model, xs, ys, FGSM(model, eps), batch_size)[0]
        robust, fgsm = metrics["val/robust_acc"], metrics["val/fgsm_acc"]
        if catastrophic_overfitting(self._best_robust, robust, self._last_fgsm, fgsm):
            metrics["val/catastrophic_overfitting"] = 1.0
            print(
                f"warning: catastrophic overfitting: PGD accuracy fell to {robust:.3f} "
                f"(best {self._best_robust:.3f}) while FGSM accuracy rose to {fgsm:.3f}; "
                "the best-robust checkpoint is kept (train.monitor=val/robust_acc)",
                file=sys.stderr,
            )
        self._best_robust = max(self._best_robust, robust)
        self._last_fgsm = fgsm
        return metrics
