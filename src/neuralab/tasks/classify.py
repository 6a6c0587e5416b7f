"""Classification of images: cross-entropy loss, accuracy and the confusion matrix."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab import data
from neuralab.data.batches import ImageBatches
from neuralab.models import create_model
from neuralab.plots import plot_confusion
from neuralab.seed import seed_everything
from neuralab.tasks.base import TASKS, Setup, Task, loss_and_confusion

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig


def build_image_model(cfg: RunConfig, spec: data.DatasetSpec, x_train: Tensor) -> nn.Module:
    """The configured image model, with the training split's normalisation inside it."""
    mean, std = data.channel_stats(x_train)
    return create_model(
        cfg.model.name,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        image_size=spec.height,
        mean=mean,
        std=std,
        **cfg.model.options,
    )


def prepare_images(
    cfg: RunConfig, build: Callable[[RunConfig, data.DatasetSpec, Tensor], nn.Module]
) -> Setup:
    """The train and val splits of an image dataset, batches of the train split (augmented
    when ``data.augment``), and the model ``build`` makes, seeded from ``cfg.seed``."""
    spec = data.DATASETS.get(cfg.data.name)
    x_train, y_train = data.load_split(cfg.data, "train")
    x_val, y_val = data.load_split(cfg.data, "val")
    seed_everything(cfg.seed)
    model = build(cfg, spec, x_train)
    batches = ImageBatches(
        x_train,
        y_train,
        cfg.train.batch_size,
        cfg.seed,
        augment=cfg.data.augment,
        crop_pad=spec.crop_pad,
        hflip=spec.hflip,
    )
    sizes = {"train/examples": len(x_train), "val/examples": len(x_val)}
    return Setup(model, batches, (x_val, y_val), sizes)


@TASKS.register("classify")
class ClassifyTask(Task):
    """Loss and metrics of a batch of (images, labels) for a model that returns logits."""

    monitors = ("val/acc", "val/loss")
    weighs_classes = True

    def __init__(self, num_classes: int, label_smoothing: float = 0.0) -> None:
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.weight: Tensor | None = None  # per class, for train.class_weights = "balanced"

    def weigh_classes(self, cfg: RunConfig, y_train: Tensor) -> None:
        """The loss weights ``train.class_weights`` asks for: N / (C · n_c) for "balanced"
        (a class absent from the train split weighs 0)."""
        if cfg.train.class_weights == "balanced":
            counts = torch.bincount(y_train, minlength=self.num_classes).double()
            weight = len(y_train) / (self.num_classes * counts.clamp(min=1))
            self.weight = torch.where(counts > 0, weight, 0.0).float()

    @classmethod
    def from_config(cls, cfg: RunConfig) -> ClassifyTask:
        spec = data.DATASETS.get(cfg.data.name)
        return cls(spec.num_classes, label_smoothing=cfg.train.label_smoothing)

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The train and val images (augmented batches of the train split) and the model."""
        setup = prepare_images(cfg, build_image_model)
        self.weigh_classes(cfg, setup.batches.y)
        return setup

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss (with label smoothing and class weights) and the batch's
        correct-prediction count."""
        logits = model(x)  # (B, num_classes)
        weight = None if self.weight is None else self.weight.to(logits.device)
        loss = F.cross_entropy(logits, y, weight, label_smoothing=self.label_smoothing)
        correct = (logits.detach().argmax(dim=1) == y).sum()
        return loss, {"correct": correct, "count": torch.tensor(len(y))}

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """The namespaced metrics the loop logs at each validation."""
        result = self.evaluate(model, x, y, batch_size)
        return {"val/loss": result["loss"], "val/acc": result["acc"]}

    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """Plain (unsmoothed) mean cross-entropy, accuracy and confusion matrix over (x, y),
        in eval mode. ``confusion[i, j]`` counts images of true class i predicted as j."""
        total_loss, confusion = loss_and_confusion(model, x, y, batch_size, self.num_classes)
        n = max(len(x), 1)
        per_class = confusion.diag().double() / confusion.sum(dim=1).clamp(min=1).double()
        return {
            "loss": total_loss / n,
            "acc": confusion.diag().sum().item() / n,
            "per_class_acc": per_class.tolist(),
            "confusion": confusion,
        }

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """Accuracy, loss, per-class accuracy and the confusion matrix (also as a PNG)."""
        spec = data.DATASETS.get(cfg.data.name)
        x, y = data.load_split(data_cfg, "test")
        return self.test_scores(cfg, run_dir, model, (x, y), spec.classes)

    def test_scores(
        self,
        cfg: RunConfig,
        run_dir: Path,
        model: nn.Module,
        test: tuple[Tensor, Tensor],
        classes: tuple[str, ...],
    ) -> dict[str, Any]:
        """The test keys of ``test`` (inputs, labels) scored, and its confusion matrix drawn."""
        x, y = test
        result = self.evaluate(model, x, y, cfg.train.eval_batch_size)
        try:
            plot_confusion(result["confusion"], classes, run_dir / "plots" / "confusion.png")
        except OSError as err:  # a read-only run directory: the numbers still count
            print(f"neuralab: could not write the confusion plot: {err.strerror}", file=sys.stderr)
        return {
            "test/acc": result["acc"],
            "test/loss": result["loss"],
            "test/examples": len(x),
            "test/per_class_acc": dict(zip(classes, result["per_class_acc"], strict=True)),
            "test/confusion": result["confusion"].tolist(),
        }

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        return [
            *super().describe(run_dir, summary, test),
            ["best val acc", self.best_val(summary, "val/acc")],
            ["test acc", f"{test['test/acc']:.4f} on {test['test/examples']} images"],
            ["test loss", f"{test['test/loss']:.4f}"],
        ]
