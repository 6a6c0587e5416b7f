"""Semantic segmentation: a class for every pixel of a scene (0 = background).

The loss is the cross-entropy of each pixel, averaged over the batch's pixels (Long,
Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic Segmentation").
Validation and test measure the mean intersection-over-union: for each class,
IoU = TP / (TP + FP + FN) over all pixels of the split, averaged over the classes that occur
in the ground truth or the prediction (background included), and pixel accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab import data
from neuralab.data import scenes
from neuralab.data.batches import Batch, ImageBatches
from neuralab.models import create_model
from neuralab.seed import seed_everything
from neuralab.tasks.base import TASKS, Setup, Task, dataset_of_kind, loss_and_confusion

if TYPE_CHECKING:
    from neuralab.config import DataConfig, RunConfig


def iou_scores(confusion: Tensor) -> dict[str, Any]:
    """Per-class IoU (None for a class in neither truth nor prediction), their mean over the
    classes that occur, and pixel accuracy, from a confusion matrix."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.nan)
    return {
        "miou": iou[present].mean().item() if present.any() else 0.0,
        "pixel_acc": (tp.sum() / confusion.sum().clamp(min=1)).item(),
        "iou": [None if v != v else v for v in iou.tolist()],  # NaN: the class never occurs
    }


class SceneBatches(ImageBatches):
    """``ImageBatches`` of uint8 scenes, each batch made float in [0, 1]."""

    def get(self, step: int) -> Batch:
        xb, yb, fresh = super().get(step)
        return Batch(xb.float().div_(255), yb, fresh)


class SceneTask(Task):
    """A kind of run on a scene set (``data.name``: fashion-scenes, mnist-scenes)."""

    purpose: ClassVar[str] = "segmentation"
    batches: ClassVar[type[SceneBatches]] = SceneBatches  # how training batches are drawn

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.object_classes = classes

    @classmethod
    def from_config(cls, cfg: RunConfig) -> SceneTask:
        needs = f"{cls.purpose} needs a scene set (data.name: {', '.join(scenes.SOURCES)})"
        return cls(dataset_of_kind(cfg, "scenes", needs).classes)

    def check_data(self, cfg: RunConfig) -> None:
        """The scenes are generated on first use; their source images must be here."""
        data.locate(scenes.SOURCES[cfg.data.name], cfg.data.data_dir or None)

    def load(self, data_cfg: DataConfig, split: str, raw: bool = False) -> tuple[Tensor, Tensor]:
        """Images (N, 3, S, S) in [0, 1] (``raw``: uint8) and this kind's targets of a split."""
        return scenes.load_scene_split(data_cfg, split, raw)

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The train split, its images kept as uint8 (a quarter of the memory; the batches
        make each one float), the val split, and the model, normalising by the train
        images' per-channel mean and std."""
        x_train, y_train = self.load(cfg.data, "train", raw=True)
        x_val, y_val = self.load(cfg.data, "val")
        mean, std = (tuple(v / 255 for v in stat) for stat in data.channel_stats(x_train))
        seed_everything(cfg.seed)
        model = create_model(
            cfg.model.name,
            num_classes=self.num_classes,
            in_channels=3,
            image_size=cfg.data.scene_size,
            mean=mean,
            std=std,
            **cfg.model.options,
        )
        batches = self.batches(x_train, y_train, cfg.train.batch_size, cfg.seed)
        sizes = {"train/examples": len(x_train), "val/examples": len(x_val)}
        return Setup(model, batches, (x_val, y_val), sizes)


@TASKS.register("segment")
class SegmentTask(SceneTask):
    """Per-pixel classification of a scene set: ``model(x)`` gives (B, classes, H, W) logits."""

    model_kind = "segment"
    monitors = ("val/miou", "val/pixel_acc", "val/loss")
    headline = ("miou", "pixel_acc")  # what `evaluate` gives that an attack report shows

    def __init__(self, classes: tuple[str, ...]) -> None:
        super().__init__(classes)
        self.classes = ("background", *classes)
        self.num_classes = len(self.classes)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean per-pixel cross-entropy; ``correct`` counts right pixels (train/acc)."""
        logits = model(x)  # (B, C, H, W)
        loss = F.cross_entropy(logits, y)
        correct = (logits.detach().argmax(dim=1) == y).sum()
        return loss, {"correct": correct, "count": torch.tensor(y.numel())}

    def attack_loss(self, model: nn.Module, logits: Tensor, y: Tensor) -> Tensor:
        """What an attack ascends: the per-pixel cross-entropy, summed over the batch."""
        return F.cross_entropy(logits.float(), y, reduction="sum")

    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """Mean per-pixel cross-entropy, mIoU, pixel accuracy and per-class IoU over (x, y),
        in eval mode."""
        total_loss, confusion = loss_and_confusion(model, x, y, batch_size, self.num_classes)
        return {"loss": total_loss / max(y.numel(), 1), **iou_scores(confusion)}

    def higher_is_better(self, monitor: str) -> bool:
        return monitor in ("val/miou", "val/pixel_acc")

    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        result = self.evaluate(model, x, y, batch_size)
        return {
            "val/loss": result["loss"],
            "val/miou": result["miou"],
            "val/pixel_acc": result["pixel_acc"],
        }

    def test(
        self, cfg: RunConfig, run_dir: Path, model: nn.Module, data_cfg: DataConfig
    ) -> dict[str, Any]:
        """mIoU, pixel accuracy, loss and per-class IoU on the test scenes."""
        x, y = self.load(data_cfg, "test")
        result = self.evaluate(model, x, y, cfg.train.eval_batch_size)
        return {
            "test/miou": result["miou"],
            "test/pixel_acc": result["pixel_acc"],
            "test/loss": result["loss"],
            "test/examples": len(x),
            "test/iou": dict(zip(self.classes, result["iou"], strict=True)),
        }

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        return [
            *super().describe(run_dir, summary, test),
            ["best val mIoU", self.best_val(summary, "val/miou")],
            ["test mIoU", f"{test['test/miou']:.4f} on {test['test/examples']} scenes"],
            ["test pixel acc", f"{test['test/pixel_acc']:.4f}"],
        ]
