"""The interface of a kind of run, and the registry of kinds.

A kind of run (classification, language modelling, adversarial training, each pretext task,
and the applications to come) owns everything that is specific to it: which data and model a
config builds (``check``, ``prepare``), the loss and metrics of a batch (``loss``), what
validation measures (``validate``), its extra summary figures (``summary``) and its test step
(``test``, ``describe``). The training loop (``neuralab.train.loop.fit``) knows steps only;
it never asks which kind it is running. A new kind is a new module with a subclass of
``Task`` registered in ``TASKS``, chosen by a config's top-level ``task`` key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab import data
from neuralab.errors import UserError
from neuralab.models import list_models, model_kind
from neuralab.registry import Registry

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig
    from neuralab.data.batches import Batch


class Batches(Protocol):
    """Training batches, each a pure function of the step (so a resumed run needs nothing
    else to continue the data order): ``get(step)`` and the length of an epoch."""

    steps_per_epoch: int

    def get(self, step: int) -> Batch: ...


@dataclass
class Setup:
    """What a kind prepares for a run: the model, its training batches, the validation split
    and the split sizes reported in the summary (e.g. ``train/examples``)."""

    model: nn.Module
    batches: Batches
    val: tuple[Tensor, Tensor]
    sizes: dict[str, int]


class Task:
    """A kind of run: the loss and metrics of a batch, and how a config becomes data and a
    model. Subclasses register themselves: ``@TASKS.register("classify")``."""

    command: ClassVar[str] = "neuralab train"  # the command that trains (and resumes) it
    model_kind: ClassVar[str] = "image"  # the kind of registered model it trains
    monitors: ClassVar[tuple[str, ...]] = ("val/loss",)  # what validate measures
    weighs_classes: ClassVar[bool] = False  # whether it reads train.class_weights
    num_classes: int = 0

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Task:
        """The task that ``cfg`` asks for (before its data is loaded)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ before anything runs

    def check(self, cfg: RunConfig, world_size: int = 1) -> None:
        """Refuse, with a one-line ``UserError``, a config this kind cannot run, before a run
        directory exists: a model of the wrong kind, data that is not there."""
        if model_kind(cfg.model.name) != self.model_kind:
            what = {
                "text": "text",
                "seq2seq": f"parallel texts ({cfg.data.name})",
                "segment": f"pixel classes ({cfg.data.name})",
                "detect": f"object boxes ({cfg.data.name})",
            }.get(self.model_kind, f"images ({cfg.data.name})")
            raise UserError(
                f"model {cfg.model.name!r} cannot learn from {what}; "
                f"{self.model_kind} models: {', '.join(list_models(kind=self.model_kind))}"
            )
        if cfg.train.monitor not in self.monitors:
            others = [n for n in TASKS.names() if cfg.train.monitor in TASKS.get(n).monitors]
            raise UserError(
                f"train.monitor={cfg.train.monitor} is not measured by {task_name(cfg)} runs "
                f"(set train.monitor to one of {', '.join(self.monitors)}); it is measured by: "
                f"{', '.join(others) or 'no kind of run'}"
            )
        if cfg.train.class_weights != "none" and not self.weighs_classes:
            raise UserError(
                f"train.class_weights={cfg.train.class_weights} is for image and text "
                f"classification runs, not {task_name(cfg)} runs"
            )
        self.check_data(cfg)

    def check_data(self, cfg: RunConfig) -> None:
        """Refuse a run whose data is not here (unless it may download it)."""
        if cfg.data.path:
            data.read_text_file(cfg.data.path)
        elif not cfg.data.download:
            data.locate(cfg.data.name, cfg.data.data_dir or None)

    # ------------------------------------------------------------------ 1. data, 2. model

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """Load the train and val splits (never the test split) and build the model, seeded
        from ``cfg.seed``; anything the run must keep (a vocabulary) goes in ``run_dir``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ 3. train

    def reset(self) -> None:
        """Forget anything carried from batch to batch (called when a batch says ``fresh``)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold for the task to resume exactly."""
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a batch and its statistics: ``count`` (what the loss is a mean
        over) and, for a task with right answers, ``correct`` (logged as ``train/acc``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ 4. validate

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """The namespaced metrics (``val/...``) the loop logs at each validation."""
        raise NotImplementedError

    def summary(self, setup: Setup, steps: int, train_s: float) -> dict[str, Any]:
        """Figures of this kind added to ``results.json`` (e.g. tokens per second)."""
        return {}

    def higher_is_better(self, monitor: str) -> bool:
        """Whether a larger value of ``monitor`` is a better model (accuracies; losses are
        better lower): how the loop picks the best checkpoint."""
        return monitor.endswith("acc")

    # ------------------------------------------------------------------ 5. test

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """``test/...`` metrics of a trained ``model`` on the test split (touched only here)."""
        raise UserError(f"{run_dir} is a {cfg.task} run, which has no test step")

    @staticmethod
    def best_val(summary: dict, key: str) -> str:
        """The best validation ``key`` and its step, for ``describe``'s table."""
        if key not in summary:
            return "no val split (data.val_fraction=0): the last checkpoint is used"
        return f"{summary[key]:.4f} (step {summary['best_step']})"

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        """Rows (result, value) of the table printed after training and testing."""
        return [
            ["status", summary["status"]],
            ["steps", f"{summary['train/steps']} of {summary['train/total_steps']}"],
            [
                "train time",
                f"{summary['train/wall_s']:.1f} s on {summary['train/threads']} threads",
            ],
        ]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts of the examples (images, pixels) of true class i predicted as j."""
    flat = target.reshape(-1) * num_classes + pred.reshape(-1)
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


@torch.no_grad()
def loss_and_confusion(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int, num_classes: int
) -> tuple[float, Tensor]:
    """The summed cross-entropy of ``model``'s logits over (x, y) and the confusion matrix of
    its argmax (logits (B, C) or (B, C, H, W) alike), batch by batch, in eval mode (uint8
    inputs made float in [0, 1] a batch at a time); the model's previous mode is restored
    afterwards."""
    was_training = model.training
    model.eval()
    total_loss = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    try:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            if xb.dtype == torch.uint8:
                xb = xb.float().div_(255)
            logits = model(xb)
            total_loss += F.cross_entropy(logits.float(), yb, reduction="sum").item()
            confusion += confusion_matrix(logits.argmax(dim=1), yb, num_classes)
    finally:
        model.train(was_training)
    return total_loss, confusion


def dataset_of_kind(cfg: RunConfig, kind: str, needs: str) -> data.DatasetSpec:
    """The spec of ``cfg.data.name``, which a kind of run needs to be of dataset ``kind``;
    else the one-line error "{needs}, not 'name'"."""
    spec = data.DATASETS.get(cfg.data.name)
    if spec.kind != kind:
        raise UserError(f"{needs}, not {cfg.data.name!r}")
    return spec


TASKS: Registry[type[Task]] = Registry("task")


def task_name(cfg: RunConfig) -> str:
    """The kind a config runs: its ``task`` key, or for ``task = "auto"`` the kind its other
    sections imply (text data: language modelling; ``ssl.method``: that pretext task;
    ``adv.method``: adversarial training; else classification)."""
    if cfg.task != "auto":
        return cfg.task
    if data.is_text(cfg.data):
        return "language_model"
    if cfg.ssl.method != "none":
        return cfg.ssl.method
    return "classify" if cfg.adv.method == "none" else "adversarial"


def build_task(cfg: RunConfig) -> Task:
    """The registered kind that ``cfg`` runs, built from it."""
    return TASKS.get(task_name(cfg)).from_config(cfg)
