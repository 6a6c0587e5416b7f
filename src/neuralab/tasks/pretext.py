"""Self-supervised pretraining as tasks of the one training loop.

The loop hands every task (images, labels); a pretext task never reads the labels: its loss
is a function of the images and of torch's global RNG only (which every checkpoint saves, so
pretraining resumes exactly). Validation measures the pretext loss on the val split (views and
masks drawn from a fixed seed, so validations compare) and the kNN monitor: each val image is
classified by its k nearest training images in feature space (cosine, temperature-weighted),
a memory bank of ``ssl.knn_bank`` training images. Those labels serve the monitor only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from neuralab import data
from neuralab.config import RunConfig
from neuralab.errors import UserError
from neuralab.ssl.knn import extract_features, knn_predict
from neuralab.ssl.model import build_ssl_model
from neuralab.tasks.base import Setup, Task
from neuralab.tasks.classify import build_image_model, prepare_images


class PretextTask(Task):
    """Shared by every pretext task: label-free ``loss``, kNN-monitored ``validate``."""

    command = "neuralab pretrain"
    monitors = ("val/knn_acc", "val/loss")

    def __init__(self, cfg: RunConfig, num_classes: int) -> None:
        self.cfg, self.ssl, self.num_classes = cfg, cfg.ssl, num_classes
        self.batch_size = cfg.train.batch_size
        self.hflip = data.DATASETS.get(cfg.data.name).hflip
        self._bank: tuple[Tensor, Tensor] | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> PretextTask:
        return cls(cfg, data.DATASETS.get(cfg.data.name).num_classes)

    def check(self, cfg: RunConfig, world_size: int = 1) -> None:
        """Pretraining needs an image dataset and an image backbone, and makes its own views
        of each image; it does not mix with adversarial training."""
        spec = data.DATASETS.get(cfg.data.name)
        if spec.kind != "image":
            raise UserError(
                f"ssl.method={cfg.ssl.method} needs an image dataset, not {cfg.data.name}"
            )
        if cfg.data.augment:
            raise UserError(
                f"ssl.method={cfg.ssl.method} makes its own views of each image; "
                "set data.augment=false"
            )
        if cfg.adv.method != "none":
            raise UserError(
                "ssl pretraining and adversarial training do not mix; set adv.method=none"
            )
        super().check(cfg, world_size)

    def prepare(self, cfg: RunConfig, run_dir: Path, resume: bool) -> Setup:
        """The image splits, and the backbone wrapped with this method's pretext head."""
        return prepare_images(
            cfg, lambda c, spec, x: build_ssl_model(c.ssl, build_image_model(c, spec, x))
        )

    @property
    def bank(self) -> tuple[Tensor, Tensor]:
        """The kNN monitor's memory, loaded at the first validation."""
        if self._bank is None:
            self._bank = knn_bank(self.cfg)
        return self._bank

    def pretext_loss(
        self, model: nn.Module, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor | None, int]:
        """(loss, correct, count) of images ``x``; random draws from ``generator``. ``correct``
        is None for a task with no notion of a right answer (reconstruction)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The pretext loss of the images ``x``; the labels ``y`` are never read."""
        loss, correct, count = self.pretext_loss(model, x, None)
        stats = {"count": torch.tensor(count)}
        if correct is not None:  # without it, the loop logs no train/acc
            stats["correct"] = correct
        return loss, stats

    @torch.no_grad()
    def validate(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict:
        """``val/loss`` (pretext loss at the training batch size, fixed views) and
        ``val/knn_acc`` (kNN accuracy on the val split, the training bank as memory)."""
        was_training = model.training
        model.eval()
        same_draws = torch.Generator().manual_seed(0)
        total, seen = 0.0, 0
        try:
            for start in range(0, len(x) - 1, self.batch_size):
                xb = x[start : start + self.batch_size]
                loss, _, _ = self.pretext_loss(model, xb, same_draws)
                total, seen = total + loss.item() * len(xb), seen + len(xb)
        finally:
            model.train(was_training)
        bank_x, bank_y = self.bank
        bank = extract_features(model, bank_x, batch_size)
        preds = knn_predict(
            bank,
            bank_y,
            extract_features(model, x, batch_size),
            self.num_classes,
            self.ssl.knn_k,
            self.ssl.knn_temperature,
        )
        return {
            "val/loss": total / max(seen, 1),
            "val/knn_acc": (preds == y).double().mean().item(),
        }


def knn_bank(cfg: RunConfig) -> tuple[Tensor, Tensor]:
    """The kNN monitor's memory: ``ssl.knn_bank`` training images (a fixed random choice)."""
    x, y = data.load_split(cfg.data, "train")
    if cfg.ssl.knn_bank and cfg.ssl.knn_bank < len(x):
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        pick = pick[: cfg.ssl.knn_bank].sort().values
        x, y = x[pick], y[pick]
    return x, y

    def describe(self, run_dir: Path, summary: dict, test: dict) -> list[list[str]]:
        return [
            *super().describe(run_dir, summary, test),
            ["best val kNN acc", f"{summary.get('val/knn_acc', float('nan')):.4f}"],
            ["best step", str(summary["best_step"])],
        ]
