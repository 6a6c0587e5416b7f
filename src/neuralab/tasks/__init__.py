"""What the loss is: the loop asks a task for the loss and metrics of a batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralab.config import RunConfig
from neuralab.data.text import is_text
from neuralab.tasks.classify import ClassifyTask
from neuralab.tasks.language_model import LanguageModelTask

if TYPE_CHECKING:
    from neuralab.tasks.pretext import PretextTask


def build_task(cfg: RunConfig, num_classes: int) -> ClassifyTask | LanguageModelTask | PretextTask:
    """The task a run config asks for: language modelling for text data, a pretext task for
    self-supervised pretraining, else plain or adversarial classification (for text,
    ``num_classes`` is the vocabulary size)."""
    if is_text(cfg.data):
        return LanguageModelTask(num_classes, carry=cfg.data.batching == "streams")
    if cfg.ssl.method != "none":  # self-supervised pretraining: labels are never read
        from neuralab.tasks.pretext import build_pretext_task

        return build_pretext_task(cfg, num_classes)
    if cfg.adv.method == "none":
        return ClassifyTask(num_classes, label_smoothing=cfg.train.label_smoothing)
    from neuralab.tasks.adversarial import AdversarialTask

    return AdversarialTask(num_classes, cfg.adv, label_smoothing=cfg.train.label_smoothing)


__all__ = ["ClassifyTask", "LanguageModelTask", "build_task"]
