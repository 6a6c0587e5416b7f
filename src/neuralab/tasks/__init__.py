"""What the loss is: the loop asks a task for the loss and metrics of a batch."""

from neuralab.tasks.classify import ClassifyTask

__all__ = ["ClassifyTask"]
