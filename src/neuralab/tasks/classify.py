"""Classification: cross-entropy loss, accuracy and the confusion matrix."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ClassifyTask:
    """Loss and metrics of a batch of (images, labels) for a model that returns logits."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def reset(self) -> None:
        """Forget anything carried from batch to batch (classification carries nothing)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold for the task to resume exactly."""
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss (with label smoothing) and the batch's correct-prediction count."""
        logits = model(x)  # (B, num_classes)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        correct = (logits.detach().argmax(dim=1) == y).sum()
        return loss, {"correct": correct, "count": torch.tensor(len(y))}

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """The namespaced metrics the loop logs at each validation."""
        result = self.evaluate(model, x, y, batch_size)
        return {"val/loss": result["loss"], "val/acc": result["acc"]}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """Plain (unsmoothed) mean cross-entropy, accuracy and confusion matrix over (x, y).

        The model is put in eval mode and its previous mode restored afterwards.
        ``confusion[i, j]`` counts images of true class i predicted as class j.
        """
        was_training = model.training
        model.eval()
        total_loss = 0.0
        confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        try:
            for start in range(0, len(x), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                logits = model(xb)
                total_loss += F.cross_entropy(logits.float(), yb, reduction="sum").item()
                pred = logits.argmax(dim=1)
                confusion += torch.bincount(
                    yb * self.num_classes + pred, minlength=self.num_classes**2
                ).view(self.num_classes, self.num_classes)
        finally:
            model.train(was_training)
        n = max(len(x), 1)
        per_class = confusion.diag().double() / confusion.sum(dim=1).clamp(min=1).double()
        return {
            "loss": total_loss / n,
            "acc": confusion.diag().sum().item() / n,
            "per_class_acc": per_class.tolist(),
            "confusion": confusion,
        }
