"""What the loss is: the loop asks a task for the loss and metrics of a batch."""

from __future__ import annotations

from neuralab.config import RunConfig
from neuralab.data.text import is_text
from neuralab.tasks.classify import ClassifyTask
from neuralab.tasks.language_model import LanguageModelTask


def build_task(cfg: RunConfig, num_classes: int) -> ClassifyTask | LanguageModelTask:
    """The task a run config asks for: language modelling for text data, else plain or
    adversarial classification (for text, ``num_classes`` is the vocabulary size)."""
    if is_text(cfg.data):
        return LanguageModelTask(num_classes, carry=cfg.data.batching == "streams")
    if cfg.adv.method == "none":
        return ClassifyTask(num_classes, label_smoothing=cfg.train.label_smoothing)
    from neuralab.tasks.adversarial import AdversarialTask

    return AdversarialTask(num_classes, cfg.adv, label_smoothing=cfg.train.label_smoothing)


__all__ = ["ClassifyTask", "LanguageModelTask", "build_task"]
