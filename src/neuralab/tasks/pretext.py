"""Self-supervised pretraining as tasks of the one training loop.

The loop hands every task (images, labels); a pretext task never reads the labels: its loss
is a function of the images and of torch's global RNG only (which every checkpoint saves, so
pretraining resumes exactly). Validation measures the pretext loss on the val split (views and
masks drawn from a fixed seed, so validations compare) and the kNN monitor: each val image is
classified by its k nearest training images in feature space (cosine, temperature-weighted),
a memory bank of ``ssl.knn_bank`` training images. Those labels serve the monitor only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from neuralab import data
from neuralab.config import RunConfig, SSLConfig
from neuralab.errors import UserError
from neuralab.ssl.knn import extract_features, knn_predict


class PretextTask:
    """Shared by every pretext task: label-free ``loss``, kNN-monitored ``validate``."""

    def __init__(
        self,
        ssl: SSLConfig,
        num_classes: int,
        bank: tuple[Tensor, Tensor],
        batch_size: int,
        hflip: bool,
    ) -> None:
        self.ssl, self.num_classes = ssl, num_classes
        self.bank_x, self.bank_y = bank
        self.batch_size, self.hflip = batch_size, hflip

    def reset(self) -> None:
        """Pretext tasks carry nothing from batch to batch."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Nothing to restore."""

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
        bank = extract_features(model, self.bank_x, batch_size)
        preds = knn_predict(
            bank,
            self.bank_y,
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


def build_pretext_task(cfg: RunConfig, num_classes: int) -> PretextTask:
    """The pretext task ``cfg.ssl.method`` names, with its kNN monitor's bank."""
    spec = data.DATASETS.get(cfg.data.name)
    if spec.kind != "image":
        raise UserError(f"ssl.method={cfg.ssl.method} needs an image dataset, not {cfg.data.name}")
    args = (cfg.ssl, num_classes, knn_bank(cfg), cfg.train.batch_size, spec.hflip)
    if cfg.ssl.method == "simclr":
        from neuralab.tasks.contrastive import ContrastiveTask

        return ContrastiveTask(*args)
    if cfg.ssl.method == "nnclr":
        from neuralab.tasks.contrastive import NearestNeighbourTask

        return NearestNeighbourTask(*args)
    if cfg.ssl.method == "dae":
        from neuralab.tasks.denoise import DenoiseTask

        return DenoiseTask(*args)
    from neuralab.tasks.masked import MaskedTask

    if spec.height % cfg.ssl.patch_size or spec.width % cfg.ssl.patch_size:
        raise UserError(
            f"ssl.patch_size={cfg.ssl.patch_size} does not divide {cfg.data.name}'s "
            f"{spec.height}x{spec.width} images; pick a divisor"
        )
    return MaskedTask(*args)
