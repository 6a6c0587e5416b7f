"""Contrastive pretraining: two random views of each image, and a loss that must tell which
views belong together.

- SimCLR (Chen et al. 2020): each view's positive is the other view of its image (NT-Xent).
- NNCLR (Dwibedi et al. 2021): each view's positive is its nearest neighbour in a support set
  of earlier projections, the queue being the task's state (saved in every checkpoint).

The views are made here, from the batch of clean images (``data.augment`` is off for
pretraining). ``train/acc`` is the fraction of the 2B anchors that ranked their image's other
view first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from neuralab.config import RunConfig
from neuralab.errors import UserError
from neuralab.ssl.nnclr import SupportSet, nnclr_loss
from neuralab.ssl.simclr import nt_xent
from neuralab.ssl.views import simclr_view
from neuralab.tasks.base import TASKS
from neuralab.tasks.pretext import PretextTask


@TASKS.register("simclr")
class ContrastiveTask(PretextTask):
    def views(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Two random views of every image of ``x`` (B, C, H, W), stacked: (2B, C, H, W)."""
        kw = {"crop_scale": self.ssl.crop_scale, "strength": self.ssl.jitter, "hflip": self.hflip}
        return torch.cat([simclr_view(x, generator=generator, **kw) for _ in range(2)])

    def pretext_loss(
        self, model: nn.Module, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, int]:
        n = len(x)
        z = model(self.views(x, generator))  # (2B, proj_dim): one pass, BatchNorm sees both views
        loss, correct = nt_xent(z[:n], z[n:], self.ssl.temperature)
        return loss, correct, 2 * n


@TASKS.register("nnclr")
class NearestNeighbourTask(ContrastiveTask):
    """NNCLR: SimCLR's views and projection head; positives from the support set, which each
    training batch (never a validation batch) then refreshes with its first views."""

    def __init__(self, cfg: RunConfig, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        seeded = torch.Generator().manual_seed(0)
        self.support = SupportSet(self.ssl.support_size, self.ssl.proj_dim, seeded)

    def check(self, cfg: RunConfig, world_size: int = 1) -> None:
        """The support set lives in one process."""
        super().check(cfg, world_size)
        if world_size > 1:
            raise UserError(
                "ssl.method=nnclr keeps its support set in one process; run it without torchrun"
            )
        if cfg.ssl.support_size < 1:
            raise UserError(f"ssl.support_size must be >= 1, got {cfg.ssl.support_size}")

    def state_dict(self) -> dict[str, Any]:
        """The support set (a FIFO queue of earlier projections)."""
        return {"support": self.support.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.support.load_state_dict(saved["support"])

    def pretext_loss(
        self, model: nn.Module, x: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, int]:
        n = len(x)
        z = model(self.views(x, generator))  # (2B, proj_dim)
        loss, correct = nnclr_loss(z[:n], z[n:], self.support, self.ssl.temperature)
        if model.training:
            self.support.push(z[:n])
        return loss, correct, 2 * n
