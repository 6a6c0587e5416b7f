"""Kinds of run, registered by name: what data and model a config builds, the loss and
metrics of a batch, what validation and testing compute (see ``neuralab.tasks.base``).

Importing this package imports every kind's module, which registers it in ``TASKS``.
"""

from neuralab.tasks import (
    adversarial,
    caption,
    contrastive,
    ctc,
    denoise,
    detect,
    masked,
    segment,
    textclass,
    translate,
    video,
)
from neuralab.tasks.base import TASKS, Setup, Task, build_task, task_name
from neuralab.tasks.classify import ClassifyTask
from neuralab.tasks.language_model import LanguageModelTask

__all__ = [
    "TASKS",
    "ClassifyTask",
    "LanguageModelTask",
    "Setup",
    "Task",
    "adversarial",
    "build_task",
    "caption",
    "contrastive",
    "ctc",
    "denoise",
    "detect",
    "masked",
    "segment",
    "task_name",
    "textclass",
    "translate",
    "video",
]
