"""What the loss is: the loop asks a task for the loss and metrics of a batch."""

from __future__ import annotations

from neuralab.config import RunConfig
from neuralab.tasks.classify import ClassifyTask


def build_task(cfg: RunConfig, num_classes: int) -> ClassifyTask:
    """The task a run config asks for: plain or adversarial classification."""
    if cfg.adv.method == "none":
        return ClassifyTask(num_classes, label_smoothing=cfg.train.label_smoothing)
    from neuralab.tasks.adversarial import AdversarialTask

    return AdversarialTask(num_classes, cfg.adv, label_smoothing=cfg.train.label_smoothing)


__all__ = ["ClassifyTask", "build_task"]
